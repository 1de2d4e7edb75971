"""`--backend s3`: the services of the scaled-out setup, shared by both registries.

One SeaweedFS (S3 on loopback) and one PostgreSQL, the throwaway servers of tests/services.
cargobay keeps its blobs under the prefix `cargobay/` of the bucket and its metadata in its own
database (the config of tests/conftest.py's scaleout_config); distribution uses its S3 driver on
the same bucket under `/dist`. PostgreSQL is switched back to durable commits (fsync,
synchronous_commit, full_page_writes: the test service turns them off), as a deployment would
run it and as the embedded setup's SQLite commits are (synchronous=FULL).

Also here: deleting pushed blobs behind the registries' backs (DeleteObjects), the bytes stored
under a prefix (for the soak's check that deleted blobs are reclaimed), the CPU time of
the services (/proc, for CPU per operation of the whole setup), and the object store's own
single-stream ceilings.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
import pytest
from obstore.store import S3Store

from bench.http import Connection, HTTPError
from bench.servers import cpu_by_pid, process_tree
from tests.conftest import scaleout_config
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import SeaweedFS, find_weed

MiB = 1 << 20
PROBE_SIZE = 64 * MiB
PROBE_KEY = "bench-limits/probe"
PROBE_EXPIRY = timedelta(minutes=5)


class ScaleOut:
    cargobay_prefix = "cargobay"
    distribution_root = "dist"
    database = "cargobay_bench"

    def __init__(self, workdir: Path) -> None:
        self.seaweedfs = SeaweedFS(workdir / "seaweedfs")
        self.postgres: PostgresServer | None = None
        self.dsn = ""
        self.versions: dict[str, str] = {}
        self._store: S3Store | None = None
        self._weed_pid = 0

    def start(self) -> ScaleOut:
        try:
            self.seaweedfs.start()
            self.postgres = PostgresServer().start()
        except pytest.skip.Exception as exc:  # the test services skip when a tool is missing
            raise RuntimeError(str(exc)) from None
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            self.postgres.psql(f"ALTER SYSTEM SET {setting} = on")
        self.postgres.psql("SELECT pg_reload_conf()")
        self.dsn = self.postgres.create_database(self.database)
        self._store = S3Store(
            self.seaweedfs.bucket,
            endpoint=self.seaweedfs.endpoint_url,
            region=self.seaweedfs.region,
            access_key_id=self.seaweedfs.access_key,
            secret_access_key=self.seaweedfs.secret_key,
            client_options={"allow_http": True, "timeout": "120s"},
        )
        # `weed mini` is a child of this process (tests/services/seaweedfs.py starts it).
        weeds = [p for p in process_tree(os.getpid())[1:] if _comm(p) == "weed"]
        self._weed_pid = max(weeds, default=0)
        self.versions = {
            "seaweedfs": _weed_version(),
            "postgresql": self.postgres.psql("SHOW server_version").strip(),
            "postgresql_settings": ", ".join(
                f"{name}={self.postgres.psql(f'SHOW {name}').strip()}"
                for name in ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
            ),
        }
        return self

    def stop(self) -> None:
        """Stop both services; PostgreSQL's temporary folder goes too (SeaweedFS's is in the
        bench's data root)."""
        self.seaweedfs.stop()
        if self.postgres is not None:
            self.postgres.cleanup()
            self.postgres = None

    # -- configuration of the registries -----------------------------------------------------

    def cargobay_config(self) -> dict[str, object]:
        return scaleout_config(self.seaweedfs, self.dsn, self.cargobay_prefix)

    def distribution_s3(self) -> dict[str, object]:
        """distribution 2.8's S3 driver: with `regionendpoint` set it addresses the bucket
        path-style (http://host:port/bucket/key), which SeaweedFS needs."""
        return {
            "region": self.seaweedfs.region,
            "bucket": self.seaweedfs.bucket,
            "regionendpoint": self.seaweedfs.endpoint_url,
            "accesskey": self.seaweedfs.access_key,
            "secretkey": self.seaweedfs.secret_key,
            "secure": False,
            "v4auth": True,
            "rootdirectory": f"/{self.distribution_root}",
        }

    # -- objects -------------------------------------------------------------------------------

    def delete(self, keys: list[str]) -> None:
        """Delete objects (absent ones are fine), 1,000 per DeleteObjects request."""
        assert self._store is not None
        for start in range(0, len(keys), 1000):
            obstore.delete(self._store, keys[start : start + 1000])

    def object_bytes(self, prefix: str) -> int:
        """The summed size of the objects whose keys start with `prefix`."""
        assert self._store is not None
        return object_bytes(self._store, prefix)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each service's process tree (SeaweedFS; PostgreSQL's
        postmaster and its backends)."""
        out = {"seaweedfs": 0.0, "postgresql": 0.0}
        if self._weed_pid:
            out["seaweedfs"] = sum(cpu_by_pid(process_tree(self._weed_pid)).values())
        if self.postgres is not None:
            try:
                postmaster = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                postmaster = 0
            if postmaster:
                out["postgresql"] = sum(cpu_by_pid(process_tree(postmaster)).values())
        return out

    def limits(self, quick: bool = False) -> dict[str, float]:
        """SeaweedFS alone, one stream, through presigned URLs with the bench's HTTP client: PUT
        and GET of a 64 MiB object (best of 3, 2 with --quick). The ceilings of registry pushes
        (which cross it once more) and of redirected downloads."""
        assert self._store is not None
        data = memoryview(os.urandom(PROBE_SIZE))
        best = {"s3_put_mib_s": 0.0, "s3_get_mib_s": 0.0}
        parts = urlsplit(self.seaweedfs.endpoint_url)
        assert parts.hostname is not None and parts.port is not None
        with Connection(parts.hostname, parts.port) as conn:
            for _ in range(2 if quick else 3):
                for method, key in (("PUT", "s3_put_mib_s"), ("GET", "s3_get_mib_s")):
                    url = urlsplit(obstore.sign(self._store, method, PROBE_KEY, PROBE_EXPIRY))
                    target = f"{url.path}?{url.query}"
                    t = time.perf_counter()
                    if method == "PUT":
                        response = conn.request("PUT", target, None, data)
                    else:
                        response = conn.request("GET", target, keep_body=False)
                    elapsed = time.perf_counter() - t
                    response.expect(200, what=f"presigned {method}")
                    if method == "GET" and response.length != PROBE_SIZE:
                        raise HTTPError(f"presigned GET returned {response.length} bytes")
                    best[key] = max(best[key], PROBE_SIZE / MiB / elapsed)
        self.delete([PROBE_KEY])
        return best


def object_bytes(store: S3Store, prefix: str) -> int:
    """The summed size of the objects of `store` whose keys start with `prefix` (one LIST
    request per 1,000 objects)."""
    pages = obstore.list(store, prefix, chunk_size=1000)
    return sum(meta["size"] for page in pages for meta in page)


def cargobay_bucket(s3: dict[str, Any]) -> S3Store:
    """A client for the bucket of cargobay's `storage.s3` settings, as tests/conftest.py's
    scaleout_config writes them (an endpoint addressed path-style, static keys)."""
    if not s3.get("path_style"):
        raise ValueError("only path-style S3 settings (an S3 service on loopback) are supported")
    return S3Store(
        s3["bucket"],
        endpoint=s3["endpoint"],
        region=s3.get("region") or "us-east-1",
        access_key_id=s3["access_key_id"],
        secret_access_key=s3["secret_access_key"],
        client_options={"allow_http": True, "timeout": "120s"},
    )


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _weed_version() -> str:
    try:
        out = subprocess.run([find_weed(), "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = out.stdout.split()  # "version 8000GB 4.48 pypi linux amd64"
    return words[2] if len(words) > 2 else out.stdout.strip() or "unknown"


def describe(versions: dict[str, Any]) -> str:
    return (
        f"SeaweedFS {versions.get('seaweedfs', '?')} (`weed mini`, one process), PostgreSQL"
        f" {versions.get('postgresql', '?')} ({versions.get('postgresql_settings', '')})"
    )
