"""`make bench`: cargobay vs distribution on loopback, A/B alternating rounds, markdown report.

python -m bench.run                 # full run (~20 minutes), report to bench/results/
python -m bench.run --quick         # smoke test: 1 round, 1 s per case, small seeds
python -m bench.run --cases 'push-*,manifest-get-c16' --rounds 5
python -m bench.run --cases 'memory-*' --skip-limits    # only the memory scenarios (~2 minutes)
python -m bench.run --write         # also write docs/performance.md
python -m bench.run --backend s3 --write    # on S3 (SeaweedFS) + PostgreSQL: docs/performance-s3.md
python -m bench.run --list          # case ids
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cases import Case, Settings, all_cases, build_fixture, headline, run_case, seed
from bench.machine import machine_info, machine_limits
from bench.memory import MemoryCase, memory_cases, prepare, run_memory_case
from bench.report import SERVERS, fmt, render, write_json
from bench.servers import Cargobay, Distribution, Server, distribution_version, remove_tree

if TYPE_CHECKING:
    from bench.backing import ScaleOut

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Per backend: the report --write replaces, and the hand-written analysis appended to it.
DOCS = {"embedded": ROOT / "docs" / "performance.md", "s3": ROOT / "docs" / "performance-s3.md"}
ANALYSES = {
    "embedded": Path(__file__).with_name("analysis.md"),
    "s3": Path(__file__).with_name("analysis-s3.md"),
}
# With S3 both registries redirect blob GETs to the object store: the registry's memory is not
# on the path of a download, so the pull scenario would measure SeaweedFS.
S3_SKIPPED_MEMORY = "memory-pull-*"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round, 1 s per case, small seeds")
    p.add_argument("--cases", help="comma-separated case ids or globs (see --list)")
    p.add_argument("--list", action="store_true", help="list case ids and exit")
    p.add_argument("--rounds", type=int, help="A/B rounds (default 3; --quick: 1)")
    p.add_argument("--duration", type=float, help="seconds per run (default 3; --quick: 1)")
    p.add_argument("--tags-large", type=int, help="tags in the large tag list (default 100000)")
    p.add_argument("--repos", type=int, help="repositories for the catalog (default 10000)")
    p.add_argument("--workers", type=int, default=2, help="cargobay workers (default 2)")
    p.add_argument("--data-root", type=Path, help="parent of the temporary data directories")
    p.add_argument("--keep-data", action="store_true", help="keep the data directories")
    p.add_argument("--skip-limits", action="store_true", help="skip the machine-limit probes")
    p.add_argument(
        "--backend",
        choices=("embedded", "s3"),
        default="embedded",
        help="embedded: files + SQLite (distribution: filesystem); s3: SeaweedFS S3 +"
        " PostgreSQL, started here (distribution: its S3 driver on the same SeaweedFS)",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help=f"write the report to {DOCS['embedded'].relative_to(ROOT)}"
        f" ({DOCS['s3'].relative_to(ROOT)} with --backend s3)",
    )
    return p.parse_args(argv)


def settings_for(args: argparse.Namespace) -> Settings:
    base = (
        Settings(duration=1.0, rounds=1, tags_large=5_000, repos=500, ops_scale=0.1)
        if (args.quick)
        else Settings()
    )
    return dataclasses.replace(
        base,
        rounds=args.rounds or base.rounds,
        duration=args.duration or base.duration,
        tags_large=args.tags_large or base.tags_large,
        repos=args.repos or base.repos,
    )


def select(
    cases: list[Case], memory: list[MemoryCase], spec: str | None
) -> tuple[list[Case], list[MemoryCase]]:
    if not spec:
        return cases, memory
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
    chosen_memory = [c for c in memory if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
    if not chosen and not chosen_memory:
        sys.exit(f"no case matches {spec!r}; see --list")
    return chosen, chosen_memory


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_for(args)
    cases, memory = select(all_cases(settings), memory_cases(), args.cases)
    skipped = []
    if args.backend == "s3":
        skipped = [c for c in memory if fnmatch.fnmatchcase(c.id, S3_SKIPPED_MEMORY)]
        memory = [c for c in memory if c not in skipped]
        if not cases and not memory:
            sys.exit(f"no case left: {S3_SKIPPED_MEMORY} is skipped with --backend s3")
    if args.list:
        for case in all_cases(settings):
            print(f"{case.id:24} {case.title}")
        for mcase in memory_cases():
            print(f"{mcase.id:24} {mcase.title}")
        return 0

    began = time.monotonic()
    stamp = datetime.now(UTC)
    data_root = Path(tempfile.mkdtemp(prefix="cargobay-bench-", dir=args.data_root))
    results: dict[str, Any] = {
        "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "settings": {
            **dataclasses.asdict(settings),
            "quick": args.quick,
            "cargobay_workers": args.workers,
            "argv": shlex.join(sys.argv[1:] if argv is None else argv),
            "data_root": str(data_root),
            "backend": args.backend,
        },
        "skipped": [
            f"{c.title}: skipped with --backend s3 (blob GETs are redirected to SeaweedFS, so the"
            " registry's memory is not on the download path)"
            for c in skipped
        ],
        "versions": {"cargobay": "", "distribution": distribution_version()},
        "limits": {},
        "seeding": {},
        "failures": [],
        "cases": [{**dataclasses.asdict(c), "runs": {s: [] for s in SERVERS}} for c in cases],
        "memory": [{**dataclasses.asdict(c), "runs": {}} for c in memory],
    }
    backing: ScaleOut | None = None
    servers: list[Server] = []
    try:
        if args.backend == "s3":
            from bench.backing import ScaleOut, describe  # imports tests/services, obstore

            log("starting SeaweedFS and PostgreSQL ...")
            backing = ScaleOut(data_root / "services")
            backing.start()
            results["versions"]["services"] = backing.versions
            log(f"  {describe(backing.versions)}")
        servers = [
            Cargobay(data_root / "cargobay", workers=args.workers, backing=backing),
            Distribution(data_root / "distribution", backing=backing),
        ]
        if args.skip_limits:
            results["limits"] = {
                k: math.nan for k in ("sha256_mib_s", "loopback_mib_s", "disk_write_fsync_mib_s")
            }
        else:
            log("measuring machine limits ...")
            results["limits"] = machine_limits(data_root, quick=args.quick)
            if backing is not None:
                results["limits"].update(backing.limits(quick=args.quick))
            log("  " + ", ".join(f"{k} {fmt(v)}" for k, v in results["limits"].items()))
        log("building payloads ...")
        fixture = build_fixture(cases)
        for server in servers:
            server.start()
            results["versions"][server.name] = server.version
            log(f"{server.label} on {server.host}:{server.port} (pid {server.pid}); seeding ...")
            try:
                results["seeding"][server.name] = seed(server, cases, fixture, settings)
                log(
                    "  "
                    + ", ".join(
                        f"{k} {t:.1f} s" for k, t in results["seeding"][server.name].items()
                    )
                )
            except Exception as exc:
                results["failures"].append(f"seeding {server.label}: {exc}")
                log(f"  seeding failed: {exc}")
        for round_ in range(settings.rounds):
            for case, record in zip(cases, results["cases"], strict=True):
                for server in servers:  # A B, A B, ...
                    result = _run(server, case, fixture, settings)
                    result["round"] = round_
                    record["runs"][server.name].append(result)
                    log(
                        f"round {round_ + 1}/{settings.rounds} {case.id:22} {server.label:12}"
                        f" {fmt(result['headline']):>9} {case.unit:7}"
                        f" p99 {fmt(result['p99_ms'])} ms, {result['ops']} ops"
                        + (
                            f", {result['errors']} errors: {result['error']}"
                            if result["errors"] or result["error"]
                            else ""
                        )
                    )
        if memory:
            _run_memory(servers, memory, results, restart=bool(cases))
    except KeyboardInterrupt:
        results["failures"].append("interrupted")
        log("interrupted; stopping servers")
    except Exception as exc:
        results["failures"].append(f"benchmark aborted: {exc!r}")
        log(traceback.format_exc())
    finally:
        for server in servers:
            if server.process is not None and not server.alive():
                results["failures"].append(
                    f"{server.label} exited early: {server.log_tail(5) or 'no log'}"
                )
            server.stop()
        if backing is not None:
            backing.stop()
        if not args.keep_data:
            remove_tree(data_root)

    results["elapsed_s"] = time.monotonic() - began
    results["machine"]["loadavg_end"] = os.getloadavg()  # other work on the machine: noise
    report = render(results)
    print(report)
    name = (
        stamp.strftime("%Y%m%dT%H%M%SZ")
        + ("-s3" if args.backend == "s3" else "")
        + ("-quick" if args.quick else "")
    )
    write_json(results, RESULTS / f"{name}.json")
    target = DOCS[args.backend] if args.write else RESULTS / f"{name}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    analysis = ANALYSES[args.backend]
    if analysis.exists():  # the hand-written profiling summary travels with the numbers
        report = report.rstrip("\n") + "\n\n" + analysis.read_text()
    target.write_text(report)
    log(
        f"report: {target}; raw numbers: {RESULTS / f'{name}.json'};"
        f" {results['elapsed_s'] / 60:.1f} min"
    )
    return 1 if results["failures"] else 0


def _run_memory(
    servers: list[Server], memory: list[MemoryCase], results: dict[str, Any], *, restart: bool
) -> None:
    """Each memory scenario once per server (A B, A B, ...), on freshly started servers when
    throughput cases ran before: memory their caches freed but kept could hide growth."""
    if restart:
        log("restarting the servers for the memory scenarios ...")
        for server in servers:
            server.stop()
            server.start()
    log("generating blob digests for the memory scenarios ...")
    blobs = prepare(memory)
    for case, record in zip(memory, results["memory"], strict=True):
        for server in servers:
            if not server.alive():
                record["runs"][server.name] = {"errors": 1, "error": f"{server.label} is down"}
                continue
            try:
                result = run_memory_case(server, case, blobs[case.id])
            except Exception as exc:
                result = {"errors": 1, "error": repr(exc)[:500]}
                log(traceback.format_exc())
            record["runs"][server.name] = result
            if result["errors"]:
                log(f"memory {case.id:26} {server.label:12} error: {result['error']}")
                continue
            log(
                f"memory {case.id:26} {server.label:12} baseline {fmt(result['baseline_mib'])}"
                f" MiB, peak {fmt(result['peak_mib'])} MiB, growth {fmt(result['growth_mib'])}"
                f" MiB (VmHWM {fmt(result['hwm_growth_mib'])}),"
                f" {'pass' if result['passed'] else 'FAIL'}; {result['seconds']:.1f} s"
            )


def _run(server: Server, case: Case, fixture: Any, settings: Settings) -> dict[str, Any]:
    if not server.alive():
        result: dict[str, Any] = {
            "ops": 0,
            "errors": 1,
            "error": f"{server.label} is not running",
            "p99_ms": math.nan,
            "headline": math.nan,
        }
        return result
    result = run_case(server, case, fixture, settings.duration)
    result["headline"] = headline(case, result)
    return result


if __name__ == "__main__":
    sys.exit(main())
