"""Soak, the 60-second version of `make soak` (bench/soak.py, the same code).

A real server (2 workers, embedded backend, collecting garbage every second with a 2-second
grace delay) takes the paced mixed load of 4 client threads for 60 s: pushes (one POST, POST +
PUT, chunked PATCHes; 1 KiB to 4 MiB), pulls, tag moves, tag and manifest deletes, blob unlinks,
tag listings, cancelled uploads. Its RSS (supervisor + workers, /proc), its blob storage and the
p50/p99 latency are taken every 5 s. Then the clients delete everything they pushed. It must end
with no error of any kind (the collector's warnings included), no memory growth trend after the
warm-up (Thresholds.for_duration: slope and last-third vs first-third growth), a p99 in the last
third within a factor of the first third's, a substantial amount of every scenario done, and the
blob storage back to empty (give or take 5 % of its peak) within the grace delay + 120 s of the
deletes (a few seconds, measured), with the collector's lines in the server's log. The criteria
and their reasons: docs/soak.md.

Not on S3 + PostgreSQL here: there the workers' RSS climbs for ten minutes and more while glibc's
heaps fill with freed blob buffers (the heap in use stays flat; docs/soak.md), so a 60-second run
cannot tell a leak from that without thresholds too loose to mean anything. `make soak
SOAK_ARGS='--backend s3 --duration 1800'` judges it over 30 minutes.
"""

from __future__ import annotations

import sys

import pytest

from bench.soak import SCENARIOS, Options, render, run_soak

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(300),
]

DURATION = 60.0
INTERVAL = 5.0
# At the default pace (40 scenarios/s) 60 s is ~2,400 scenarios and the rarest kinds ~3 % of
# them (~75); even with the machine busy with other work (measured: 2,100 scenarios, the
# rarest 69 each) that is well over 20.
MIN_EACH = 20
MIN_REQUESTS = 3000


def test_soak(tmp_path_factory: pytest.TempPathFactory) -> None:
    options = Options(duration=DURATION, interval=INTERVAL, data_root=tmp_path_factory.mktemp("s"))
    result = run_soak(options)
    report = render(result, f"--duration {DURATION:g} --interval {INTERVAL:g}")
    verdict = result.verdict
    assert verdict.errors == 0, report
    assert verdict.memory_ok, report
    assert verdict.p99_ok, report
    assert verdict.reclaim_ok, report
    assert verdict.collections > 0, report
    assert verdict.blob_bytes_peak > 0, report
    for kind in SCENARIOS:
        assert result.scenarios[kind] >= MIN_EACH, (kind, report)
    assert sum(result.requests.values()) >= MIN_REQUESTS, report
    assert result.passed, report
