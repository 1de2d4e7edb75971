"""Garbage collection at work: what it costs pushes and pulls, and how fast space comes back.

    python -m bench.gc_impact [--seconds 5] [--rounds 2] [--reclaim-gib 2]

1. Throughput: cargobay (files + SQLite, 2 workers) is measured with `make bench`'s load driver
   on a few cases, while a churn thread pushes and deletes small images (so there is always
   garbage), in alternating rounds: the collector off, and the collector at full speed
   (interval 1 s; the churn's garbage is due throughout). Prints medians and
   collecting / idle ratios.
2. Reclaim: push `--reclaim-gib` GiB of images (32 MiB layers), delete them all, and time until
   the blob folder is back to its size before the pushes (interval 1 s, no grace delay).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.cases import (
    MiB,
    Settings,
    all_cases,
    build_fixture,
    headline,
    image_manifest,
    push_blob,
    put_manifest,
    run_case,
    seed,
)
from bench.http import Connection
from bench.servers import Cargobay

CASES = ("push-mono-1MiB-c8", "pull-1MiB-c8", "head-1MiB-c8", "manifest-get-c16")
# Collecting: every second, with a delay short enough that the churn's garbage from the warm-up
# is due during the cases, and long enough for the pull cases' seeded blobs, which no manifest
# references (their GETs and HEADs keep them once the cases run).
DELAY = 20
WARMUP = 25  # seconds of churn before seeding and measuring: garbage is due from then on
MODES = {
    "idle": {"gc": {"enabled": False}},
    "collecting": {"gc": {"interval_seconds": 1, "delay_seconds": DELAY}},
}


def blob_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "blobs").rglob("*") if p.is_file())


class Churn(threading.Thread):
    """Push a small image and delete it again, as fast as one connection goes."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = Connection(host, port)
        self.stop = threading.Event()
        self.images = 0

    def run(self) -> None:
        layer = os.urandom(64 * 1024)
        while not self.stop.is_set():
            self.images += 1
            config = json.dumps({"churn": self.images}).encode()
            fresh = layer[:-8] + self.images.to_bytes(8, "big")
            blobs = [(config, _sha256(config)), (fresh, _sha256(fresh))]
            for data, digest in blobs:
                push_blob(self.conn, "churn/app", data, digest)
            manifest = image_manifest(config, [(blobs[1][1], len(fresh))])
            put_manifest(self.conn, "churn/app", "latest", manifest)
            target = f"/v2/churn/app/manifests/{_sha256(manifest)}"
            self.conn.request("DELETE", target).expect(202, what="DELETE")
        self.conn.close()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def throughput(root: Path, seconds: float, rounds: int) -> dict[str, dict[str, list[float]]]:
    settings = Settings(duration=seconds, rounds=rounds)
    cases = [c for c in all_cases(settings) if c.id in CASES]
    fixture = build_fixture(cases)
    results: dict[str, dict[str, list[float]]] = {c.id: {m: [] for m in MODES} for c in cases}
    for round_ in range(rounds):
        for mode, config in MODES.items():
            server = Cargobay(root / f"{mode}{round_}", workers=2, config=config)
            server.start()
            try:
                churn = Churn(server.host, server.port)
                churn.start()
                time.sleep(WARMUP)
                seed(server, cases, fixture, settings)
                for case in cases:
                    result = run_case(server, case, fixture, seconds)
                    results[case.id][mode].append(headline(case, result))
                churn.stop.set()
                churn.join()
                stored = blob_bytes(server.data_dir) / MiB
                print(
                    f"round {round_ + 1} {mode}: {churn.images} churn images,"
                    f" {stored:.0f} MiB stored"
                )
            finally:
                server.stop()
    return results


def reclaim(root: Path, gib: float) -> dict[str, Any]:
    """Push with the collector off, then restart with it on and no grace delay (a live
    collector without delay could take a layer before its manifest arrives), delete, time."""
    server = Cargobay(root / "reclaim", workers=2, config=MODES["idle"])
    server.start()
    try:
        conn = Connection(server.host, server.port)
        before = blob_bytes(server.data_dir)
        layer = bytearray(os.urandom(32 * MiB))
        digests = []
        for i in range(int(gib * 1024 / 32)):
            layer[-8:] = i.to_bytes(8, "big")
            digest = _sha256(bytes(layer))
            push_blob(conn, "reclaim/app", bytes(layer), digest)
            config = json.dumps({"image": i}).encode()
            push_blob(conn, "reclaim/app", config, _sha256(config))
            manifest = image_manifest(config, [(digest, len(layer))])
            put_manifest(conn, "reclaim/app", f"v{i}", manifest)
            digests.append(_sha256(manifest))
        peak = blob_bytes(server.data_dir)
        conn.close()
        server.stop()
        server = Cargobay(
            server.data_dir, workers=2, config={"gc": {"interval_seconds": 1, "delay_seconds": 0}}
        )
        server.start()
        conn = Connection(server.host, server.port)
        started = time.monotonic()
        for digest in digests:
            conn.request("DELETE", f"/v2/reclaim/app/manifests/{digest}").expect(202)
        deleted = time.monotonic() - started
        while blob_bytes(server.data_dir) > before:
            if time.monotonic() - started > 600:
                raise RuntimeError("space not reclaimed within 10 minutes")
            time.sleep(0.1)
        return {
            "pushed_bytes": peak - before,
            "images": len(digests),
            "delete_seconds": deleted,
            "reclaim_seconds": time.monotonic() - started,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reclaim-gib", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cargobay-gc-impact-") as folder:
        root = Path(folder)
        results = throughput(root, args.seconds, args.rounds)
        print(f"{'case':22} {'idle':>10} {'collecting':>11} {'ratio':>6}")
        for case_id, by_mode in results.items():
            idle, busy = (
                statistics.median(by_mode["idle"]),
                statistics.median(by_mode["collecting"]),
            )
            print(f"{case_id:22} {idle:10.1f} {busy:11.1f} {busy / idle:6.2f}")
        if args.reclaim_gib > 0:
            found = reclaim(root, args.reclaim_gib)
            print(
                f"reclaim: {found['images']} images, {found['pushed_bytes'] / MiB:,.0f} MiB pushed;"
                f" deleted in {found['delete_seconds']:.1f} s; blob folder back to its size"
                f" {found['reclaim_seconds']:.1f} s after the first delete"
            )


if __name__ == "__main__":
    main()
