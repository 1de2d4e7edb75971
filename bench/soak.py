"""`make soak`: a long mixed load on one cargobay server; memory, errors and p99 must stay flat,
and once everything is deleted the garbage collector must give the space back.

python -m bench.soak                       # 10 minutes on the embedded backend (files + SQLite)
python -m bench.soak --duration 60         # the 60-second version tests/reliability runs
python -m bench.soak --backend s3          # on SeaweedFS (S3) + PostgreSQL, started here
python -m bench.soak --gc-delay 5          # the collector's grace delay (default 2 s)
python -m bench.soak --write               # also write the results into docs/soak.md

The server collects garbage every second (gc.interval_seconds: 1) with a short grace delay
(gc.delay_seconds: --gc-delay, 2 s), on both backends and with given services too; it logs at
info level (without the access log) so that each collection's line is in its log.

The load. Several client threads (keep-alive raw-socket HTTP/1.1, bench/http.py) each own two
repositories and share a third with the others. Each picks a scenario at random, paced to a
total rate (scenarios per second, all clients together):

  push            push an image: a fresh config blob and 1-3 layers (in the shared repository
                  some layers come from a small pool every client pushes, so identical blobs
                  arrive concurrently). Blob sizes are log-uniform from 1 KiB to 4 MiB; each blob
                  goes up one of three ways: one POST with ?digest=, POST + PUT, or POST + PATCH
                  chunks (+ a final PUT, sometimes carrying the last chunk). HEAD before (404)
                  and after (200). Then a manifest PUT by tag: a tag move when the tag exists.
  pull            manifest GET by tag, then the config and layers (GET, or HEAD), digests and
                  lengths checked; with S3 the blob GETs follow the redirect to SeaweedFS.
  retag           PUT an existing manifest under another tag (a tag move), HEAD it back.
  delete-tag      DELETE a tag, then its GET must be 404.
  delete-manifest DELETE the oldest manifest by digest (its tags go with it), then unlink its
                  fresh blobs (DELETE blob, HEAD 404). Also forced before a push once a repository
                  holds MAX_MANIFESTS manifests, so the data stays in a steady state; the
                  collector reclaims the bytes of what was deleted, so disk use stays bounded.
  list-tags       the tag list, whole or in pages of 3 following Link: must equal the client's
                  own model of the repository exactly.
  cancel-upload   POST, PATCH 64 KiB, status GET (204, Range), DELETE (204), status GET 404.
  catalog         GET /v2/_catalog?n=100.

Every response must have the status the client's model predicts (and bodies and digests match);
anything else, or an exception, is an error. Errors in the server's log (and any warning of the
collector: a failed or skipped collection, a failed delete) and worker restarts count too. After
the run no upload may be left staged (embedded: uploads/ and upload-locks/ empty).

The drain. When the load stops, each client deletes everything its model holds: every manifest
by digest, then its fresh blobs (an unexpected status is an error). Then the blob storage
(embedded: the files under <data dir>/blobs; S3: the objects under <prefix>/blobs/) is polled
until it is back to its size when the load started, give or take RECLAIM_SLACK (5 %) of the
largest size sampled: the load starts on an empty registry, so 5 % of nothing would demand that
the last byte be gone by the last poll. It has --gc-delay + RECLAIM_TIMEOUT (120 s) to get there.

Measured every `--interval` seconds (10): RSS (VmRSS) of the supervisor and each worker, from
/proc, summed; open file descriptors; the metadata database's size (embedded); the bytes of the
blob storage; CPU used by the server, by the clients and by everything else on the machine; and
per window, the requests done and their p50/p99 latency (all requests, and per request class).
Samples and windows before the warm-up (10 % of the run, 30 % on S3; at least two samples) are
not judged. The verdict (the thresholds and their reasons: Thresholds, and docs/soak.md):

  errors    none (in the load and in the drain).
  memory    the Theil-Sen slope of the summed RSS over the judged samples at most
            max_slope_mib_min, AND the median of the last third of those samples at most
            max_growth_pct above the median of the first third. Either one failing fails.
  p99       the median of the window p99s of the last third at most p99_factor times that of
            the first third (medians of windows: a burst of other work on the machine moves a
            window or two, not the median).
  reclaim   after the drain the blob storage back within bounds in time (above), and the
            server's log shows the collector's "garbage collection: ..." lines (a soak whose
            collector never ran would otherwise pass on a small load).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if __package__ in (None, ""):  # `python bench/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http import Connection, HTTPError, Response, with_query
from bench.machine import machine_info
from bench.servers import Cargobay, cpu_by_pid, process_tree, remove_tree, status_kib

if TYPE_CHECKING:
    from bench.backing import ScaleOut

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "soak.md"
RESULTS = ROOT / "bench" / "results"

KiB = 1 << 10
MiB = 1 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCTET = "application/octet-stream"

MIN_BLOB = 1 * KiB
MAX_BLOB = 4 * MiB
SINGLE_POST_MAX = 1 * MiB  # one POST ?digest= only for blobs up to this size
CHUNK_SIZES = (64 * KiB, 256 * KiB, 1 * MiB)
TAGS_PER_REPO = 8  # tag names t0..t7 (prefixed by the client in the shared repository)
MAX_MANIFESTS = 12  # per repository and client: beyond this, the oldest is deleted first
POOL = 8  # blobs every client pushes to the shared repository
NOISE = 8 * MiB  # each client's random bytes, from which unique blobs are cut
REQUEST_TIMEOUT = 120.0
GC_INTERVAL = 1  # seconds between the collector's runs (gc.interval_seconds)
# After the drain the blob storage must be back to its size at the start plus this share of its
# peak (the start is empty: see the module docstring), within the grace delay plus this.
RECLAIM_SLACK = 0.05
RECLAIM_TIMEOUT = 120.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

# Scenario weights. delete-manifest is also forced before a push into a full repository.
SCENARIOS: dict[str, float] = {
    "push": 3,
    "pull": 6,
    "retag": 2,
    "delete-tag": 1,
    "delete-manifest": 1,
    "list-tags": 2,
    "cancel-upload": 0.5,
    "catalog": 0.5,
}
# Request classes for latency: every request is one of these.
CLASSES = (
    "blob-upload",
    "blob-get",
    "blob-head",
    "manifest-put",
    "manifest-get",
    "delete",
    "list",
)


@dataclass(frozen=True)
class Thresholds:
    """The pass criteria; why these values: docs/soak.md, "Criteria". Defaults for the 10-minute
    soak; `for_duration` gives the 60-second test's."""

    max_slope_mib_min: float = 1.0
    max_growth_pct: float = 5.0
    p99_factor: float = 2.0

    @classmethod
    def for_duration(cls, duration: float) -> Thresholds:
        """A short run judges under a minute of samples: the same allocator steps (a few
        hundred KiB to 2 MiB per worker, at random times) make a steeper slope, and three
        windows per third make a noisier p99 median."""
        if duration >= 300:
            return cls()
        return cls(max_slope_mib_min=6.0, max_growth_pct=5.0, p99_factor=3.0)


@dataclass
class Options:
    duration: float = 600.0
    backend: str = "embedded"  # or "s3": SeaweedFS + PostgreSQL, started here
    clients: int = 4
    rate: float = 40.0  # scenarios per second, all clients together; 0: as fast as they go
    interval: float = 10.0  # seconds between memory samples (and latency windows)
    warmup: float | None = None  # seconds not judged; default max(2 intervals, 10 % of run)
    workers: int = 2
    seed: int = 1
    data_root: Path | None = None
    keep_data: bool = False
    thresholds: Thresholds | None = None  # default: Thresholds.for_duration(duration)
    gc_delay: int = 2  # the collector's grace delay, seconds (gc.delay_seconds)
    # Run against services started elsewhere (the test suite's SeaweedFS and PostgreSQL
    # fixtures): cargobay's config for them (the soak's gc settings are merged in).
    server_config: dict[str, object] | None = None
    log: Callable[[str], None] | None = None

    def judged_after(self) -> float:
        """Seconds of warm-up: 10 % of the run, 30 % on S3 (at least two samples). The workers'
        RSS first climbs while glibc's heaps fill with freed buffers: for about a minute on the
        embedded backend, for ten or more on S3, whose blob buffers are larger (docs/soak.md:
        judge S3 over 30 minutes)."""
        if self.warmup is not None:
            return self.warmup
        share = 0.3 if self.backend == "s3" else 0.1
        return max(2 * self.interval, share * self.duration)


# -- results ----------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_by_pid: dict[int, int]  # bytes
    fds_by_pid: dict[int, int]
    # CPU seconds so far: the server's processes, this process (the clients), the whole machine
    # (busy: user, nice, system, irq, softirq, steal). What neither of the first two used is
    # other work on the machine: noise for the latencies.
    cpu_server: float = 0.0
    cpu_client: float = 0.0
    cpu_machine: float = 0.0
    cpu_services: float = 0.0  # --backend s3: SeaweedFS and PostgreSQL, serving the server
    database_bytes: int = 0  # embedded: metadata.db + its WAL (nothing may grow without bound)
    blob_bytes: int = 0  # committed blobs: files under data_dir/blobs, or objects in the bucket

    @property
    def rss(self) -> int:
        return sum(self.rss_by_pid.values())

    @property
    def fds(self) -> int:
        return sum(self.fds_by_pid.values())


@dataclass
class Window:
    start: float
    end: float
    requests: int
    p50_ms: float
    p99_ms: float
    by_class: dict[str, tuple[int, float, float]]  # class -> (requests, p50 ms, p99 ms)
    errors: int


@dataclass
class Verdict:
    errors: int
    error_messages: list[str]
    memory_slope_mib_min: float
    memory_first_third_mib: float
    memory_last_third_mib: float
    memory_growth_mib: float
    memory_growth_pct: float
    bytes_per_request: float  # slope / request rate: what a leak would cost per request
    p99_first_third_ms: float
    p99_last_third_ms: float
    p99_ratio: float
    errors_ok: bool
    memory_ok: bool
    p99_ok: bool
    leftovers: dict[str, int]  # staged uploads and lock files left after the load
    # The drain (results stored before it existed have none: reclaim_ok None).
    blob_bytes_start: int = 0
    blob_bytes_peak: int = 0  # the most sampled, during the load or the drain
    blob_bytes_end: int = 0
    reclaim_seconds: float = math.nan  # from the drain's first DELETE; NaN: not reclaimed
    collections: int = 0  # the collector's "garbage collection: ..." lines in the server's log
    reclaim_ok: bool | None = None

    @property
    def passed(self) -> bool:
        return self.errors_ok and self.memory_ok and self.p99_ok and self.reclaim_ok is not False


@dataclass
class SoakResult:
    options: dict[str, Any]
    thresholds: Thresholds
    date: str
    machine: dict[str, Any]
    version: str
    seconds: float
    samples: list[Sample]
    windows: list[Window]
    scenarios: Counter[str]
    requests: Counter[str]
    bytes_up: int
    bytes_down: int
    judged_after: float
    verdict: Verdict
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    drain_images: int = 0  # manifests deleted by the drain
    drain_delete_seconds: float = math.nan  # how long the drain's DELETEs took

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scenarios"] = dict(self.scenarios)  # asdict would rebuild Counters from pairs
        data["requests"] = dict(self.requests)
        data["passed"] = self.passed
        return data


# -- blobs and images -------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    fresh: bool  # unique to one manifest: unlinked with it


@dataclass(frozen=True)
class Image:
    digest: str
    content: bytes
    config: Blob
    config_bytes: bytes
    layers: tuple[Blob, ...]


@dataclass
class Repo:
    name: str
    tag_prefix: str  # "" in the client's own repositories, "c<N>-" in the shared one
    shared: bool
    manifests: dict[str, Image] = field(default_factory=dict)  # oldest first
    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest


def sha256(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def log_uniform_size(rng: random.Random, low: int = MIN_BLOB, high: int = MAX_BLOB) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def pool_blobs(seed: int) -> list[tuple[bytes, str]]:
    """The shared repository's pool: the same bytes for every client."""
    rng = random.Random(seed)
    out = []
    for _ in range(POOL):
        data = rng.randbytes(log_uniform_size(rng, 16 * KiB, 2 * MiB))
        out.append((data, sha256(data)))
    return out


# -- statistics shared by the clients ---------------------------------------------------------


class Failure(Exception):
    """A response the model did not predict."""


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: list[tuple[str, float]] = []  # (class, seconds) of this window
        self.errors: list[str] = []
        self.error_count = 0
        self.window_errors = 0
        self.scenarios: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.bytes_up = 0
        self.bytes_down = 0

    def record(self, cls: str, seconds: float, up: int, down: int) -> None:
        with self.lock:
            self.current.append((cls, seconds))
            self.requests[cls] += 1
            self.bytes_up += up
            self.bytes_down += down

    def done(self, scenario: str) -> None:
        with self.lock:
            self.scenarios[scenario] += 1

    def error(self, message: str) -> None:
        with self.lock:
            self.error_count += 1
            self.window_errors += 1
            if len(self.errors) < 50:
                self.errors.append(message)

    def add_errors(self, other: Stats) -> None:
        """Count `other`'s errors here too (it keeps the first messages only, as this does)."""
        for message in other.errors:
            self.error(message)
        with self.lock:
            self.error_count += other.error_count - len(other.errors)

    def take_window(self) -> tuple[list[tuple[str, float]], int]:
        with self.lock:
            window, self.current = self.current, []
            errors, self.window_errors = self.window_errors, 0
            return window, errors


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- one client -------------------------------------------------------------------------------


class Client(threading.Thread):
    def __init__(
        self,
        index: int,
        host: str,
        port: int,
        stats: Stats,
        stop: threading.Event,
        interval: float,
        pool: list[tuple[bytes, str]],
        seed: int,
    ) -> None:
        super().__init__(name=f"soak-client-{index}", daemon=True)
        self.index = index
        self.conn = Connection(host, port, timeout=REQUEST_TIMEOUT)
        self.stats = stats
        self.stop_event = stop
        self.interval = interval  # seconds between scenario starts; 0: none
        self.pool = pool
        self.rng = random.Random(seed * 1000 + index)
        self.noise = self.rng.randbytes(NOISE)
        self.counter = 0
        self.generation = 0
        self.repos = self._new_repos()
        self.names = list(SCENARIOS)
        self.weights = [SCENARIOS[n] for n in self.names]

    def _new_repos(self) -> list[Repo]:
        """Two own repositories and this client's part of the shared one. After an error the
        model may be wrong: the client starts over in new repositories (generation + 1)."""
        g = f"-{self.generation}" if self.generation else ""
        return [
            Repo(f"soak/c{self.index}/a{g}", "", False),
            Repo(f"soak/c{self.index}/b{g}", "", False),
            Repo(f"soak/shared{g}", f"c{self.index}-", True),
        ]

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        next_start = time.monotonic() + self.rng.uniform(0, self.interval)
        for repo in self.repos:  # every repository starts with an image
            self._guarded("push", functools.partial(self.push, repo))
        while not self.stop_event.is_set():
            if self.interval:
                delay = next_start - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
                # Late (a slow scenario): start now, do not burst to catch up.
                next_start = max(next_start + self.interval, time.monotonic())
            name = self.rng.choices(self.names, self.weights)[0]
            repo = self.rng.choice(self.repos)
            self._guarded(name, functools.partial(self.scenario, name, repo))
        self.conn.close()

    def _guarded(self, name: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:
            detail = str(exc) if isinstance(exc, Failure) else traceback.format_exc(limit=3)
            self.stats.error(f"client {self.index} {name}: {detail}"[:1000])
            self.generation += 1
            self.repos = self._new_repos()
            self.conn.close()

    def scenario(self, name: str, repo: Repo) -> None:
        if name == "push":
            if len(repo.manifests) >= MAX_MANIFESTS:
                self.delete_manifest(repo)
            self.push(repo)
        elif name == "pull":
            self.pull(repo)
        elif name == "retag":
            self.retag(repo)
        elif name == "delete-tag":
            self.delete_tag(repo)
        elif name == "delete-manifest":
            self.delete_manifest(repo)
        elif name == "list-tags":
            self.list_tags(repo)
        elif name == "cancel-upload":
            self.cancel_upload(repo)
        elif name == "catalog":
            self.catalog()
        else:  # pragma: no cover
            raise ValueError(name)

    # -- requests --------------------------------------------------------------------------
    def call(
        self,
        cls: str,
        method: str,
        target: str,
        expect: tuple[int, ...],
        headers: dict[str, str] | None = None,
        body: bytes | memoryview | None = None,
        *,
        keep_body: bool = True,
        follow: bool = False,
    ) -> Response:
        t = time.perf_counter()
        try:
            response = self.conn.request(
                method, target, headers, body, keep_body=keep_body, follow=follow
            )
        except (OSError, HTTPError) as exc:
            raise Failure(f"{method} {target}: {exc!r}") from None
        self.stats.record(
            cls, time.perf_counter() - t, len(body) if body is not None else 0, response.length
        )
        if response.status not in expect:
            raise Failure(
                f"{method} {target}: {response.status}, expected {expect}: {response.body[:300]!r}"
            )
        return response

    def _fresh(self, size: int) -> bytes:
        """`size` bytes no one pushed before: a 16-byte header (client, counter), then a slice
        of this client's random bytes at a random offset."""
        self.counter += 1
        head = f"{self.index:07d}:{self.counter:08d}".encode()[:16]
        start = self.rng.randrange(0, NOISE - size + 1) if size > 16 else 0
        return (head + self.noise[start : start + max(size - 16, 0)])[:size]

    def upload(self, repo: Repo, data: bytes, digest: str) -> None:
        """Push one blob one of three ways."""
        base = f"/v2/{repo.name}/blobs/uploads/"
        size = len(data)
        how = self.rng.random()
        if how < 0.3 and size <= SINGLE_POST_MAX:  # one POST carrying the blob
            response = self.call(
                "blob-upload",
                "POST",
                with_query(base, digest=digest),
                (201,),
                {"Content-Type": OCTET},
                data,
            )
        elif how < 0.6:  # POST + PUT
            location = self.call("blob-upload", "POST", base, (202,)).location()
            response = self.call(
                "blob-upload",
                "PUT",
                with_query(location, digest=digest),
                (201,),
                {"Content-Type": OCTET},
                data,
            )
        else:  # POST + PATCHes (+ the last chunk in the PUT, sometimes)
            location = self.call("blob-upload", "POST", base, (202,)).location()
            chunk = self.rng.choice(CHUNK_SIZES)
            view = memoryview(data)
            last_in_put = self.rng.random() < 0.3 and size > chunk
            end_patches = size - (size % chunk or chunk) if last_in_put else size
            offset = 0
            while offset < end_patches:
                end = min(offset + chunk, end_patches)
                response = self.call(
                    "blob-upload",
                    "PATCH",
                    location,
                    (202,),
                    {"Content-Type": OCTET, "Content-Range": f"{offset}-{end - 1}"},
                    view[offset:end],
                )
                if response.headers.get("range") != f"0-{end - 1}":
                    raise Failure(f"PATCH {location}: Range {response.headers.get('range')!r}")
                location = response.location()
                offset = end
            rest = view[offset:] if offset < size else None
            headers = {"Content-Type": OCTET}
            if rest is not None:
                headers["Content-Range"] = f"{offset}-{size - 1}"
            response = self.call(
                "blob-upload", "PUT", with_query(location, digest=digest), (201,), headers, rest
            )
        if response.headers.get("docker-content-digest") != digest:
            raise Failure(
                f"blob push {digest}: got {response.headers.get('docker-content-digest')}"
            )

    def push_blob(self, repo: Repo, data: bytes, digest: str, fresh: bool) -> Blob:
        target = f"/v2/{repo.name}/blobs/{digest}"
        # A pool blob of the shared repository may have been pushed by another client already.
        self.call("blob-head", "HEAD", target, (404,) if fresh else (200, 404))
        self.upload(repo, data, digest)
        head = self.call("blob-head", "HEAD", target, (200,))
        if head.headers.get("content-length") != str(len(data)):
            raise Failure(f"HEAD {target}: length {head.headers.get('content-length')}")
        return Blob(digest, len(data), fresh)

    def push(self, repo: Repo) -> None:
        self.counter += 1
        config_bytes = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Labels": {"soak": f"{self.index}-{self.counter}"}},
                "pad": "x" * self.rng.randrange(0, 2048),
            }
        ).encode()
        config = self.push_blob(repo, config_bytes, sha256(config_bytes), True)
        layers: list[Blob] = []
        for _ in range(self.rng.randint(1, 3)):
            if repo.shared and self.rng.random() < 0.6:
                data, digest = self.rng.choice(self.pool)
                if any(layer.digest == digest for layer in layers):
                    continue
                layers.append(self.push_blob(repo, data, digest, False))
            else:
                data = self._fresh(log_uniform_size(self.rng))
                layers.append(self.push_blob(repo, data, sha256(data), True))
        content = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}
                    for layer in layers
                ],
                "annotations": {"soak.client": str(self.index), "soak.n": str(self.counter)},
            }
        ).encode()
        image = Image(sha256(content), content, config, config_bytes, tuple(layers))
        self.put_manifest(repo, image, self._tag(repo))
        repo.manifests[image.digest] = image
        self.stats.done("push")

    def _tag(self, repo: Repo) -> str:
        return f"{repo.tag_prefix}t{self.rng.randrange(TAGS_PER_REPO)}"

    def put_manifest(self, repo: Repo, image: Image, tag: str) -> None:
        response = self.call(
            "manifest-put",
            "PUT",
            f"/v2/{repo.name}/manifests/{tag}",
            (201,),
            {"Content-Type": OCI_MANIFEST},
            image.content,
        )
        if response.headers.get("docker-content-digest") != image.digest:
            raise Failure(
                f"manifest PUT {tag}: digest {response.headers.get('docker-content-digest')}"
            )
        repo.tags[tag] = image.digest

    def pull(self, repo: Repo) -> None:
        base = f"/v2/{repo.name}"
        if not repo.tags:
            self.call("manifest-get", "GET", f"{base}/manifests/{self._tag(repo)}", (404,))
            return
        tag = self.rng.choice(sorted(repo.tags))
        image = repo.manifests[repo.tags[tag]]
        response = self.call(
            "manifest-get", "GET", f"{base}/manifests/{tag}", (200,), {"Accept": OCI_MANIFEST}
        )
        if (
            response.body != image.content
            or response.headers.get("docker-content-digest") != image.digest
        ):
            raise Failure(f"GET {base}/manifests/{tag}: not the manifest pushed ({image.digest})")
        config = self.call(
            "blob-get", "GET", f"{base}/blobs/{image.config.digest}", (200,), follow=True
        )
        if config.body != image.config_bytes:
            raise Failure(f"GET config {image.config.digest}: other bytes")
        for layer in image.layers:
            target = f"{base}/blobs/{layer.digest}"
            if self.rng.random() < 0.3:
                head = self.call("blob-head", "HEAD", target, (200,))
                length = int(head.headers.get("content-length", "-1"))
            else:
                length = self.call(
                    "blob-get", "GET", target, (200,), keep_body=False, follow=True
                ).length
            if length != layer.size:
                raise Failure(f"{target}: {length} bytes, expected {layer.size}")
        self.stats.done("pull")

    def retag(self, repo: Repo) -> None:
        if not repo.manifests:
            return self.push(repo)
        image = repo.manifests[self.rng.choice(list(repo.manifests))]
        tag = self._tag(repo)
        self.put_manifest(repo, image, tag)
        head = self.call("manifest-get", "HEAD", f"/v2/{repo.name}/manifests/{tag}", (200,))
        if head.headers.get("docker-content-digest") != image.digest:
            raise Failure(f"HEAD {repo.name}:{tag} after the move: {head.headers}")
        self.stats.done("retag")
        return None

    def delete_tag(self, repo: Repo) -> None:
        if not repo.tags:
            return self.push(repo)
        tag = self.rng.choice(sorted(repo.tags))
        target = f"/v2/{repo.name}/manifests/{tag}"
        self.call("delete", "DELETE", target, (202,))
        del repo.tags[tag]
        self.call("manifest-get", "GET", target, (404,))
        self.stats.done("delete-tag")
        return None

    def delete_manifest(self, repo: Repo) -> None:
        if not repo.manifests:
            return self.push(repo)
        self.delete_oldest(repo)
        self.stats.done("delete-manifest")
        return None

    def delete_oldest(self, repo: Repo) -> None:
        """DELETE the oldest manifest by digest, then unlink its fresh blobs."""
        digest = next(iter(repo.manifests))
        image = repo.manifests.pop(digest)
        target = f"/v2/{repo.name}/manifests/{digest}"
        self.call("delete", "DELETE", target, (202,))
        for tag in [t for t, d in repo.tags.items() if d == digest]:
            del repo.tags[tag]
        self.call("manifest-get", "HEAD", target, (404,))
        for blob in (image.config, *image.layers):
            if blob.fresh:
                blob_target = f"/v2/{repo.name}/blobs/{blob.digest}"
                self.call("delete", "DELETE", blob_target, (202,))
                self.call("blob-head", "HEAD", blob_target, (404,))

    def drain(self, stats: Stats) -> int:
        """After the load (the thread has ended): delete every manifest the model holds, and
        its fresh blobs, counting requests and errors in `stats`. How many were deleted."""
        self.stats = stats
        deleted = 0
        for repo in self.repos:
            while repo.manifests:
                try:
                    self.delete_oldest(repo)
                except Exception as exc:  # the manifest is out of the model: go on
                    detail = str(exc) if isinstance(exc, Failure) else traceback.format_exc(limit=3)
                    stats.error(f"client {self.index} drain: {detail}"[:1000])
                    self.conn.close()
                else:
                    deleted += 1
        self.conn.close()
        return deleted

    def list_tags(self, repo: Repo) -> None:
        base = f"/v2/{repo.name}/tags/list"
        if self.rng.random() < 0.5:
            tags = json.loads(self.call("list", "GET", base, (200,)).body)["tags"]
        else:  # pages of 3, following Link
            tags, target, pages = [], f"{base}?n=3", 0
            while target:
                response = self.call("list", "GET", target, (200,))
                tags += json.loads(response.body)["tags"]
                link = response.headers.get("link", "")
                target = link[1 : link.index(">")] if link else ""
                pages += 1
                if pages > 1000:
                    raise Failure(f"{base}: more than 1000 pages")
        mine = [t for t in tags if t.startswith(repo.tag_prefix)] if repo.shared else tags
        if mine != sorted(repo.tags):
            raise Failure(f"{base}: {mine}, expected {sorted(repo.tags)}")
        self.stats.done("list-tags")

    def cancel_upload(self, repo: Repo) -> None:
        location = self.call(
            "blob-upload", "POST", f"/v2/{repo.name}/blobs/uploads/", (202,)
        ).location()
        data = self._fresh(64 * KiB)
        headers = {"Content-Type": OCTET, "Content-Range": f"0-{len(data) - 1}"}
        location = self.call("blob-upload", "PATCH", location, (202,), headers, data).location()
        status = self.call("list", "GET", location, (204,))
        if status.headers.get("range") != f"0-{len(data) - 1}":
            raise Failure(f"upload status: Range {status.headers.get('range')!r}")
        self.call("delete", "DELETE", location, (204,))
        self.call("list", "GET", location, (404,))
        self.stats.done("cancel-upload")

    def catalog(self) -> None:
        body = json.loads(self.call("list", "GET", "/v2/_catalog?n=100", (200,)).body)
        if not isinstance(body.get("repositories"), list):
            raise Failure(f"catalog: {body!r:.300}")
        self.stats.done("catalog")


# -- the server's memory ----------------------------------------------------------------------


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def _database_bytes(data_dir: Path | None) -> int:
    total = 0
    if data_dir is None:
        return 0
    for name in ("metadata.db", "metadata.db-wal"):
        with contextlib.suppress(OSError):
            total += (data_dir / name).stat().st_size
    return total


def file_bytes(folder: Path) -> int:
    """The summed size of the files under `folder`."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # collected meanwhile
                total += os.stat(os.path.join(parent, name)).st_size
    return total


def blob_meter(server: Cargobay, services: ScaleOut | None) -> Callable[[], int]:
    """What measures the server's committed blobs: the files under its storage path's blobs/,
    or the objects under its prefix's blobs/ in the bucket (read with the client of `services`
    when they were started here, else with one made from the server's config)."""
    storage = server.config.get("storage") or {}
    if storage.get("driver") != "s3":
        return functools.partial(file_bytes, Path(storage.get("path") or server.data_dir) / "blobs")
    from bench.backing import cargobay_bucket, object_bytes  # imports tests/services, obstore

    s3 = storage["s3"]
    prefix = str(s3.get("prefix", "")).strip("/")
    blobs = f"{prefix}/blobs/" if prefix else "blobs/"
    if services is not None:
        return functools.partial(services.object_bytes, blobs)
    return functools.partial(object_bytes, cargobay_bucket(s3), blobs)


def sample(
    root: int,
    t: float,
    data_dir: Path | None = None,
    services: ScaleOut | None = None,
    blob_bytes: Callable[[], int] | None = None,
) -> Sample:
    pids = process_tree(root)
    own = os.times()
    return Sample(
        t,
        {pid: status_kib(pid, "VmRSS") * KiB for pid in pids},
        {pid: _fd_count(pid) for pid in pids},
        cpu_server=sum(cpu_by_pid(pids).values()),
        cpu_client=own.user + own.system,
        cpu_machine=_machine_busy(),
        cpu_services=sum(services.cpu_seconds().values()) if services is not None else 0.0,
        database_bytes=_database_bytes(data_dir),
        blob_bytes=blob_bytes() if blob_bytes is not None else 0,
    )


def cores(before: Sample, after: Sample) -> tuple[float, float, float]:
    """Cores used between two samples by the server (with SeaweedFS and PostgreSQL when this
    process started them), the clients, and everything else."""
    dt = after.t - before.t
    if dt <= 0:
        return math.nan, math.nan, math.nan
    server = (after.cpu_server - before.cpu_server + after.cpu_services - before.cpu_services) / dt
    client = (after.cpu_client - before.cpu_client) / dt
    machine = (after.cpu_machine - before.cpu_machine) / dt
    return server, client, max(0.0, machine - server - client)


# -- verdict ----------------------------------------------------------------------------------


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Theil-Sen slope of (seconds, value) points, per minute: the median of the slopes between
    every two points. A leak raises every later sample, so every pair agrees on its slope; a
    single step of the allocator (free lists growing once) tilts fewer than half of the pairs
    and leaves the median near zero, where a least-squares fit would report it as a trend."""
    slopes = [
        (v2 - v1) / (t2 - t1) * 60
        for i, (t1, v1) in enumerate(points)
        for t2, v2 in points[i + 1 :]
        if t2 > t1
    ]
    return statistics.median(slopes) if slopes else math.nan


def thirds(values: list[T]) -> tuple[list[T], list[T]]:
    n = max(1, len(values) // 3)
    return values[:n], values[-n:]


@dataclass
class Reclaim:
    """What the drain measured: the blob storage's bytes, and the collector's log lines."""

    start_bytes: int  # when the load started
    peak_bytes: int  # the most sampled, during the load or the drain
    timeout: float  # seconds allowed after the drain's deletes
    end_bytes: int = 0  # at the drain's last poll
    seconds: float = math.nan  # from the drain's first DELETE until within bounds; NaN: never
    collections: int = 0  # "garbage collection: ..." lines in the server's log

    @property
    def bound(self) -> float:
        return self.start_bytes + RECLAIM_SLACK * self.peak_bytes

    def problem(self) -> str:
        """Why the space does not count as reclaimed ("" when it does)."""
        problems = []
        if math.isnan(self.seconds) or self.end_bytes > self.bound:
            problems.append(
                f"blob storage not reclaimed within {self.timeout:g} s of the deletes:"
                f" {self.end_bytes:,} bytes at the last poll, more than {self.start_bytes:,} at"
                f" the start + {RECLAIM_SLACK:.0%} of the peak {self.peak_bytes:,}"
            )
        if self.collections == 0:
            problems.append("the server's log has no 'garbage collection:' line")
        return "; ".join(problems)


def judge(
    samples: list[Sample],
    windows: list[Window],
    judged_after: float,
    thresholds: Thresholds,
    errors: int,
    messages: list[str],
    leftovers: dict[str, int],
    reclaim: Reclaim | None = None,
) -> Verdict:
    judged = [s for s in samples if s.t >= judged_after]
    points = [(s.t, s.rss / MiB) for s in judged]
    slope = slope_per_minute(points)
    first, last = thirds([v for _, v in points])
    first_mib = statistics.median(first) if first else math.nan
    last_mib = statistics.median(last) if last else math.nan
    growth = last_mib - first_mib
    judged_windows = [w for w in windows if w.start >= judged_after and w.requests]
    p99_first, p99_last = thirds([w.p99_ms for w in judged_windows])
    p99_first_ms = statistics.median(p99_first) if p99_first else math.nan
    p99_last_ms = statistics.median(p99_last) if p99_last else math.nan
    ratio = p99_last_ms / p99_first_ms if p99_first_ms else math.nan
    seconds = sum(w.end - w.start for w in judged_windows)
    rate = sum(w.requests for w in judged_windows) / seconds if seconds else math.nan
    per_request = slope * MiB / 60 / rate if rate else math.nan
    enough = len(judged) >= 3 and len(judged_windows) >= 3
    leftover_count = sum(leftovers.values())
    if leftover_count:
        messages = [*messages, f"left after the load: {leftovers}"]
    reclaimed: dict[str, Any] = {}
    if reclaim is not None:
        reclaimed = {
            "blob_bytes_start": reclaim.start_bytes,
            "blob_bytes_peak": reclaim.peak_bytes,
            "blob_bytes_end": reclaim.end_bytes,
            "reclaim_seconds": reclaim.seconds,
            "collections": reclaim.collections,
            "reclaim_ok": not reclaim.problem(),
        }
        if reclaim.problem():
            messages = [*messages, reclaim.problem()]
    return Verdict(
        errors=errors + leftover_count,
        error_messages=messages,
        memory_slope_mib_min=slope,
        memory_first_third_mib=first_mib,
        memory_last_third_mib=last_mib,
        memory_growth_mib=growth,
        memory_growth_pct=growth / first_mib * 100 if first_mib else math.nan,
        bytes_per_request=per_request,
        p99_first_third_ms=p99_first_ms,
        p99_last_third_ms=p99_last_ms,
        p99_ratio=ratio,
        errors_ok=errors + leftover_count == 0,
        memory_ok=enough
        and slope <= thresholds.max_slope_mib_min
        and growth <= first_mib * thresholds.max_growth_pct / 100,
        p99_ok=enough and ratio <= thresholds.p99_factor,
        leftovers=leftovers,
        **reclaimed,
    )


# -- running it -------------------------------------------------------------------------------


class _GivenServices:
    """Services started elsewhere: only cargobay's config for them (see Options)."""

    def __init__(self, config: dict[str, object]) -> None:
        self.config = config

    def cargobay_config(self) -> dict[str, object]:
        return self.config


def _server_errors(text: str) -> list[str]:
    """Lines of the server's log that report a failure: errors, and the collector's warnings
    (a collection that failed or was skipped, bytes it could not delete)."""
    bad = (" ERROR ", " CRITICAL ", "Traceback")
    gc_trouble = ("failed", "skipped", "cannot")
    return [
        line
        for line in text.splitlines()
        if any(b in line for b in bad)
        or ("garbage collection" in line and any(t in line for t in gc_trouble))
    ]


def _collections(text: str) -> int:
    """The collector's report lines in the server's log: one per collection that removed
    something ("garbage collection: N links and M blobs removed, ...")."""
    return sum(
        "garbage collection: " in line and " removed, " in line for line in text.splitlines()
    )


def _drain(
    clients: list[Client],
    stats: Stats,
    blob_bytes: Callable[[], int],
    reclaim: Reclaim,
    poll: float,
) -> tuple[int, float]:
    """Each client deletes what it pushed (one thread each), then the blob storage is polled
    until it is within `reclaim.bound`, for at most `reclaim.timeout` seconds after the
    deletes; `reclaim` gets the bytes seen and the time it took. Returns the manifests deleted
    and how long the deletes took."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        deleted = sum(pool.map(lambda client: client.drain(stats), clients))
    delete_seconds = time.monotonic() - started
    deadline = time.monotonic() + reclaim.timeout
    while True:
        reclaim.end_bytes = blob_bytes()
        reclaim.peak_bytes = max(reclaim.peak_bytes, reclaim.end_bytes)
        if reclaim.end_bytes <= reclaim.bound:
            reclaim.seconds = time.monotonic() - started
            return deleted, delete_seconds
        if time.monotonic() >= deadline:
            return deleted, delete_seconds
        time.sleep(poll)


# The lock files of upload expiry (cargobay.registry.uploads) and of garbage collection
# (cargobay.lifecycle.gc), kept on purpose.
KEPT_LOCKS = {str(uuid.UUID(int=n)) for n in range(3)}


def _leftovers(data_dir: Path) -> dict[str, int]:
    """Staged uploads and per-upload lock files still there after the load: every upload
    the clients started was completed or cancelled, so none may be left."""
    out = {}
    for name in ("uploads", "upload-locks"):
        folder = data_dir / name
        found = [p for p in folder.iterdir() if p.name not in KEPT_LOCKS] if folder.is_dir() else []
        out[name] = len(found)
    return out


def server_settings(options: Options) -> dict[str, Any]:
    """What the soak adds to the server's config: the collector at a 1-second interval with a
    short grace delay, and info-level logs (without the access log) so that its report lines
    are in the log."""
    return {
        "log_level": "info",
        "access_log": False,
        "gc": {"interval_seconds": GC_INTERVAL, "delay_seconds": options.gc_delay},
    }


def run_soak(options: Options) -> SoakResult:
    """Start a server, load it for `options.duration` seconds, delete everything, wait for the
    collector to reclaim the space, stop the server, judge."""
    say = options.log or (lambda message: None)
    thresholds = options.thresholds or Thresholds.for_duration(options.duration)
    data_root = Path(tempfile.mkdtemp(prefix="cargobay-soak-", dir=options.data_root))
    stamp = datetime.now(UTC)
    machine = machine_info()
    backing: ScaleOut | None = None
    server: Cargobay | None = None
    stats = Stats()
    stop = threading.Event()
    samples: list[Sample] = []
    windows: list[Window] = []
    clients: list[Client] = []
    log_errors: list[str] = []
    leftovers: dict[str, int] = {}
    reclaim: Reclaim | None = None
    drained, drain_seconds = 0, math.nan
    version = ""
    began = time.monotonic()
    try:
        if options.server_config is not None:
            backing = cast("ScaleOut", _GivenServices(options.server_config))
        elif options.backend == "s3":
            from bench.backing import ScaleOut, describe  # imports tests/services, obstore

            say("starting SeaweedFS and PostgreSQL ...")
            backing = ScaleOut(data_root / "services").start()
            say(f"  {describe(backing.versions)}")
        server = Cargobay(
            data_root / "cargobay",
            workers=options.workers,
            backing=backing,
            config=server_settings(options),
        )
        server.start()
        say(
            f"cargobay on {server.host}:{server.port} (pid {server.pid}, {options.workers} workers,"
            f" gc every {GC_INTERVAL} s, delay {options.gc_delay} s)"
        )
        pool = pool_blobs(options.seed)
        per_client = options.clients / options.rate if options.rate > 0 else 0.0
        clients = [
            Client(i, server.host, server.port, stats, stop, per_client, pool, options.seed)
            for i in range(options.clients)
        ]
        t0 = time.monotonic()
        database = (
            server.data_dir
            if options.server_config is None and options.backend == "embedded"
            else None
        )
        services = backing if options.server_config is None else None
        blob_bytes = blob_meter(server, services)
        samples.append(sample(server.pid, 0.0, database, services, blob_bytes))
        workers = set(samples[0].rss_by_pid)
        for client in clients:
            client.start()
        k = 0
        while True:
            k += 1
            end = k * options.interval
            if end > options.duration + 1e-9:
                break
            time.sleep(max(0.0, t0 + end - time.monotonic()))
            now = time.monotonic() - t0
            window, errors = stats.take_window()
            s = sample(server.pid, now, database, services, blob_bytes)
            samples.append(s)
            if set(s.rss_by_pid) != workers:
                stats.error(
                    f"server processes changed: {sorted(workers)} -> {sorted(s.rss_by_pid)}"
                )
                workers = set(s.rss_by_pid)
            w = _window(window, (k - 1) * options.interval, now, errors)
            windows.append(w)
            used = cores(samples[-2], s)
            say(
                f"{now:6.0f} s  RSS {s.rss / MiB:6.1f} MiB"
                f" ({' + '.join(f'{v / MiB:.1f}' for v in s.rss_by_pid.values())})"
                f"  fds {s.fds:3d}  blobs {s.blob_bytes / MiB:6.1f} MiB"
                f"  {w.requests:5d} requests  p50 {w.p50_ms:6.2f} ms"
                f"  p99 {w.p99_ms:6.1f} ms  errors {stats.error_count}"
                f"  cores: server {used[0]:.2f} clients {used[1]:.2f} other {used[2]:.2f}"
            )
        stop.set()
        for client in clients:
            client.join(timeout=REQUEST_TIMEOUT)
        if options.server_config is None and options.backend == "embedded":
            leftovers = _leftovers(server.data_dir)
        reclaim = Reclaim(
            samples[0].blob_bytes,
            max(s.blob_bytes for s in samples),
            timeout=options.gc_delay + RECLAIM_TIMEOUT,
        )
        say(f"drain: deleting everything, then waiting for {reclaim.peak_bytes / MiB:.1f} MiB")
        drain_stats = Stats()
        drained, drain_seconds = _drain(
            clients,
            drain_stats,
            blob_bytes,
            reclaim,
            poll=1.0 if options.backend == "s3" or options.server_config else 0.2,
        )
        stats.add_errors(drain_stats)
        say(
            f"drain: {drained} manifests deleted in {drain_seconds:.1f} s; blobs"
            f" {reclaim.end_bytes / MiB:.2f} MiB after {reclaim.seconds:.1f} s"
        )
    finally:
        stop.set()
        if server is not None:
            server.stop()
            log = server.log_tail(1_000_000)
            log_errors = _server_errors(log)
            if reclaim is not None:
                reclaim.collections = _collections(log)
            version = server.version
        if backing is not None and options.server_config is None:
            backing.stop()
        if not options.keep_data:
            remove_tree(data_root)
    for line in log_errors[:20]:
        stats.error(f"server log: {line}"[:1000])
    stats.error_count += max(0, len(log_errors) - 20)
    judged_after = options.judged_after()
    verdict = judge(
        samples,
        windows,
        judged_after,
        thresholds,
        stats.error_count,
        stats.errors,
        leftovers,
        reclaim,
    )
    per_class = _per_class(windows, judged_after)
    return SoakResult(
        options={
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(options).items()
            if k not in ("log", "server_config", "thresholds")
        },
        thresholds=thresholds,
        date=stamp.strftime("%Y-%m-%d %H:%M UTC"),
        machine={**machine, "loadavg_end": os.getloadavg()},
        version=version,
        seconds=time.monotonic() - began,
        samples=samples,
        windows=windows,
        scenarios=stats.scenarios,
        requests=stats.requests,
        bytes_up=stats.bytes_up,
        bytes_down=stats.bytes_down,
        judged_after=judged_after,
        verdict=verdict,
        per_class=per_class,
        drain_images=drained,
        drain_delete_seconds=drain_seconds,
    )


def _window(window: list[tuple[str, float]], start: float, end: float, errors: int) -> Window:
    by: dict[str, list[float]] = {}
    for cls, seconds in window:
        by.setdefault(cls, []).append(seconds * 1000)
    everything = [ms for values in by.values() for ms in values]
    return Window(
        start,
        end,
        len(everything),
        percentile(everything, 0.5),
        percentile(everything, 0.99),
        {c: (len(v), percentile(v, 0.5), percentile(v, 0.99)) for c, v in sorted(by.items())},
        errors,
    )


def _per_class(windows: list[Window], judged_after: float) -> dict[str, dict[str, float]]:
    """Per request class: requests, and the median window p99 of the first and last thirds."""
    judged = [w for w in windows if w.start >= judged_after]
    out = {}
    for cls in CLASSES:
        p99s = [w.by_class[cls][2] for w in judged if cls in w.by_class]
        first, last = thirds(p99s)
        out[cls] = {
            "requests": sum(w.by_class[cls][0] for w in windows if cls in w.by_class),
            "p99_first_ms": statistics.median(first) if first else math.nan,
            "p99_last_ms": statistics.median(last) if last else math.nan,
        }
    return out


# -- report -----------------------------------------------------------------------------------


def _argv(options: dict[str, Any]) -> str:
    """The command line of a stored result that did not record its own."""
    argv = f"--duration {options['duration']:g}"
    if options["backend"] != "embedded":
        argv += f" --backend {options['backend']}"
    return argv


def load_result(path: Path) -> SoakResult:
    """A result written by `main` (bench/results/soak-*.json), to render it again."""
    data = json.loads(path.read_text())

    def by_pid(values: dict[str, int]) -> dict[int, int]:
        return {int(k): v for k, v in values.items()}

    samples = [
        Sample(
            **{
                **raw,
                "rss_by_pid": by_pid(raw["rss_by_pid"]),
                "fds_by_pid": by_pid(raw["fds_by_pid"]),
            }
        )
        for raw in data["samples"]
    ]
    windows = [
        Window(**{**raw, "by_class": {k: tuple(v) for k, v in raw["by_class"].items()}})
        for raw in data["windows"]
    ]
    fields = {f.name for f in dataclasses.fields(SoakResult)}
    return SoakResult(
        **{
            **{k: v for k, v in data.items() if k in fields},
            "thresholds": Thresholds(**data["thresholds"]),
            "samples": samples,
            "windows": windows,
            "scenarios": Counter(data["scenarios"]),
            "requests": Counter(data["requests"]),
            "verdict": Verdict(**data["verdict"]),
        }
    )


def _f(value: float, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _ok(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def render(result: SoakResult, argv: str) -> str:
    """The result as markdown: settings, verdict, load, per-class latency, every sample."""
    v, th, o, m = result.verdict, result.thresholds, result.options, result.machine
    seconds = sum(w.end - w.start for w in result.windows) or math.nan
    total = sum(result.requests.values())
    backend = "S3 (SeaweedFS) + PostgreSQL" if o["backend"] == "s3" else "embedded (files + SQLite)"
    lines = [
        f"### {backend}: {o['duration'] / 60:g} minutes, {result.date}",
        "",
        f"`python -m bench.soak {argv}`".replace("bench.soak ``", "bench.soak"),
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable),"
        f" {m['memory_bytes'] / (1 << 30):.1f} GiB; kernel {m['kernel']}; {m['os']};"
        f" Python {m['python']}",
        "- Load average at start "
        + " / ".join(f"{x:.2f}" for x in m["loadavg"])
        + ", at the end "
        + " / ".join(f"{x:.2f}" for x in m["loadavg_end"])
        + " (the machine is shared: other work ran meanwhile)",
        f"- cargobay {result.version}, {o['workers']} workers, {backend};"
        f" {o['clients']} clients at {o['rate']:g} scenarios/s in total;"
        f" samples every {o['interval']:g} s, the first {result.judged_after:g} s not judged",
    ]
    if v.reclaim_ok is not None:
        lines.append(
            f"- Garbage collection every {GC_INTERVAL} s, grace delay {o['gc_delay']:g} s"
            f" (`gc: {{interval_seconds: {GC_INTERVAL}, delay_seconds: {o['gc_delay']:g}}}`)"
        )
    lines += [
        "",
        f"**Verdict: {'PASS' if result.passed else 'FAIL'}**",
        "",
        "| criterion | measured | threshold | result |",
        "| --- | --- | --- | --- |",
        f"| errors (unexpected status, exception, server log error or collector warning,"
        f" worker restart, upload left staged) | {v.errors} | 0 | {_ok(v.errors_ok)} |",
        f"| RSS slope (Theil-Sen) over the judged samples | {_f(v.memory_slope_mib_min, 2)}"
        f" MiB/min ({_f(v.bytes_per_request, 0)} bytes per request) |"
        f" ≤ {th.max_slope_mib_min:g} MiB/min |"
        f" {_ok(v.memory_slope_mib_min <= th.max_slope_mib_min)} |",
        f"| RSS growth, median of the last third of the samples minus the first third |"
        f" {_f(v.memory_first_third_mib)} → {_f(v.memory_last_third_mib)} MiB"
        f" ({v.memory_growth_mib:+.1f}, {v.memory_growth_pct:+.1f} %) |"
        f" ≤ {th.max_growth_pct:g} % | {_ok(v.memory_growth_pct <= th.max_growth_pct)} |",
        f"| p99 latency, median of the window p99s, last third vs first third |"
        f" {_f(v.p99_first_third_ms)} → {_f(v.p99_last_third_ms)} ms (x{_f(v.p99_ratio, 2)}) |"
        f" ≤ x{th.p99_factor:g} | {_ok(v.p99_ok)} |",
    ]
    if v.reclaim_ok is not None:
        lines.append(
            "| blob storage after everything was deleted (start → peak → end), collections"
            f" logged | {v.blob_bytes_start / MiB:,.1f} → {v.blob_bytes_peak / MiB:,.1f} →"
            f" {v.blob_bytes_end / MiB:,.2f} MiB in {_f(v.reclaim_seconds)} s;"
            f" {v.collections:,} collections | ≤ start + {RECLAIM_SLACK:.0%} of the peak"
            f" ({(v.blob_bytes_start + RECLAIM_SLACK * v.blob_bytes_peak) / MiB:,.2f} MiB)"
            f" within {o['gc_delay'] + RECLAIM_TIMEOUT:g} s of the deletes; ≥ 1 collection |"
            f" {_ok(v.reclaim_ok)} |"
        )
    lines.append("")
    other = _other_load(result)
    lines += [
        "Other work on the machine (cores used by neither the server nor the clients, mean over"
        f" the judged windows): first third {_f(other[0], 2)}, last third {_f(other[1], 2)};"
        f" server cores {_f(other[2], 2)} → {_f(other[3], 2)}.",
        "",
    ]
    if v.error_messages:
        lines += ["Errors (first ones):", ""]
        lines += [f"- `{msg.strip().replace('`', chr(39))[:400]}`" for msg in v.error_messages[:10]]
        lines.append("")
    scenarios = ", ".join(f"{k} {n:,}" for k, n in sorted(result.scenarios.items()))
    lines += [
        f"Load: {sum(result.scenarios.values()):,} scenarios ({scenarios}); {total:,} requests"
        f" ({total / seconds:,.0f}/s), {result.bytes_up / MiB:,.0f} MiB up,"
        f" {result.bytes_down / MiB:,.0f} MiB down."
        + (
            f" Drain: {result.drain_images:,} manifests (and their fresh blobs) deleted in"
            f" {result.drain_delete_seconds:.1f} s."
            if v.reclaim_ok is not None
            else ""
        ),
        "",
        "| request class | requests | p99 ms, first third | p99 ms, last third |",
        "| --- | ---: | ---: | ---: |",
    ]
    for cls, numbers in result.per_class.items():
        lines.append(
            f"| {cls} | {numbers['requests']:,.0f} | {_f(numbers['p99_first_ms'])} |"
            f" {_f(numbers['p99_last_ms'])} |"
        )
    pids = list(result.samples[0].rss_by_pid) if result.samples else []
    names = ["supervisor"] + [f"worker {i}" for i in range(1, len(pids))]
    lines += [
        "",
        "Every sample (RSS in MiB; fds: open file descriptors of the server's processes;"
        " database: metadata.db and its WAL, embedded only; blobs: the blob storage; the window"
        f" is the interval before the sample; windows before {result.judged_after:g} s are not"
        " judged):",
        "",
        "| t s | RSS total | "
        + " | ".join(names)
        + " | fds | database MiB | blobs MiB | requests | p50 ms | p99 ms | errors"
        + " | cores: server / clients / other |",
        "| ---: | ---: | "
        + " | ".join("---:" for _ in names)
        + " | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    windows = {round(w.end): w for w in result.windows}
    previous = None
    for s in result.samples:
        w = windows.get(round(s.t))
        per = [s.rss_by_pid.get(pid) for pid in pids]
        row = (
            f"| {s.t:.0f} | {s.rss / MiB:.1f} | "
            + " | ".join("—" if x is None else f"{x / MiB:.1f}" for x in per)
            + f" | {s.fds} | {_f(s.database_bytes / MiB) if s.database_bytes else '—'}"
            + f" | {_f(s.blob_bytes / MiB) if v.reclaim_ok is not None else '—'} | "
        )
        if w is None or previous is None:
            row += "— | — | — | — | — |"
        else:
            used = cores(previous, s)
            row += (
                f"{w.requests:,} | {_f(w.p50_ms, 2)} | {_f(w.p99_ms)} | {w.errors} |"
                f" {used[0]:.2f} / {used[1]:.2f} / {used[2]:.2f} |"
            )
        lines.append(row)
        previous = s
    return "\n".join(lines) + "\n"


def _other_load(result: SoakResult) -> tuple[float, float, float, float]:
    """Mean cores used by other work, first and last third of the judged windows; and the
    server's."""
    pairs = [
        cores(a, b)
        for a, b in zip(result.samples, result.samples[1:], strict=False)
        if a.t >= result.judged_after
    ]
    first, last = thirds(pairs)
    if not pairs:
        return math.nan, math.nan, math.nan, math.nan
    return (
        statistics.fmean(c[2] for c in first),
        statistics.fmean(c[2] for c in last),
        statistics.fmean(c[0] for c in first),
        statistics.fmean(c[0] for c in last),
    )


DOC_HEAD = """# Soak test

Does cargobay stay healthy under a long mixed load, with its garbage collector at work: no
errors, no memory growth, a stable p99, and the space of everything deleted given back?
`make soak` runs 10 minutes on the embedded backend (`python -m bench.soak --duration 600`);
`make soak SOAK_ARGS='--backend s3 --duration 1800'` runs 30 on S3 (SeaweedFS) + PostgreSQL,
where 10 minutes is not enough (see "What it found"). `--write` replaces the section of this
file for that backend and duration. The 60-second version runs in `make test`
(tests/reliability/test_soak.py, embedded backend).

## The load

A cargobay server (2 workers) on loopback, on an empty data directory (or bucket prefix and
database), and 4 client threads paced to 40 scenarios per second in total (about 240 requests/s,
some 30 % of what this server does on this 2-core machine unpaced: latencies measure the
service, not a queue, and the machine keeps room for its other work; the clients use under 0.1
core). Each client owns two repositories and shares a third with the others, keeps a model of
what it pushed, and picks at random (weights): push an image (3: fresh config and 1-3 layers of
1 KiB to 4 MiB, log-uniform, up as one POST, POST + PUT or POST + PATCH chunks, HEAD before and
after; in the shared repository some layers come from a pool every client pushes at once; then
a manifest PUT by tag, moving the tag when it exists), pull (6: manifest by tag, config, layers
by GET or HEAD, compared with the model), retag (2), delete a tag (1), delete the oldest manifest
by digest and unlink its blobs (1; forced before a push once a repository holds 12 manifests, so
the data stays in a steady state), list tags (2: whole, or in pages of 3 following `Link`,
compared with the model exactly), start and cancel an upload (0.5), catalog (0.5). Details: the
docstring of [bench/soak.py](../bench/soak.py).

The server collects garbage ([gc.md](gc.md)) every second with a 2-second grace delay, on both
backends (and when run against the test suite's services):

```yaml
gc: {interval_seconds: 1, delay_seconds: 2}   # --gc-delay changes the delay
log_level: info                               # the collector's lines, one per collection
access_log: false
```

So the bytes of deleted images go while the load runs, and disk use stays bounded. That is a
harsher setting than any deployment's (the default delay is a day): a client that took more
than 2 s between uploading (or HEADing) a blob and pushing the manifest that references it
would get `MANIFEST_BLOB_UNKNOWN`; the soak's clients push their manifests at once. When the
load stops, the **drain**: each client deletes everything its model holds, every manifest by
digest and then its fresh blobs, and the blob storage is watched until the collector has given
the space back.

"""
SECTION = "<!-- soak:{} -->"
DOC_FINDINGS = """## What it found

- **With the collector, the space comes back.** Embedded, 2 minutes (2026-12-06, `make soak
  SOAK_ARGS='--duration 120'`): 30,554 requests, none unexpected, no error or collector warning
  in the server's log, 172 collections logged. The blob storage held 114-145 MiB once the
  repositories were full (the collector keeps up: before it, the soak deleted the bytes of
  unlinked blobs itself); the drain deleted 136 manifests and their fresh blobs in 0.7 s, and
  3.7 s after its first DELETE the blob storage was empty (0 bytes; the 2-second delay and the
  1-second interval are most of that). RSS +0.2 % (0.31 MiB/min), p99 x1.95 with other work on
  the machine rising from 1.31 to 1.69 cores. Not run yet with the collector: the 10-minute
  soak, and S3 + PostgreSQL.
- **No errors, no leak found** (the runs under "Results" from 2026-11-27, before garbage
  collection). Embedded, 10 minutes: 151,298 requests, none unexpected, nothing in the server's
  log, no worker restart, no upload left. On S3 + PostgreSQL: none in 10 and in 30 minutes
  (52,171 and 154,726 requests).
- **Why RSS still rises a little.** Looked at with a scratch build of the server (not committed)
  that logs every 10 s glibc's `mallinfo2()`, Python's object and block counts,
  `sqlite3_memory_used()`, the RSS of each kind of mapping (/proc/self/smaps) and diffs of
  `tracemalloc` snapshots: the heap in use stays flat (12.9-14 MiB per worker embedded, 13-17
  MiB on S3, moving with the requests in flight), so do Python's objects (~57,000), SQLite's
  memory (0.44 MiB), the threads and Python's own 1 MiB arenas. What grows is the free memory
  glibc keeps in its heaps: 3 to 4.4 MiB per worker embedded over 10 minutes, 13 to 20 and 19 to
  30 MiB on S3, where each blob body is gathered whole (up to the 8 MiB part size) and copied
  into obstore's threads (each with its own glibc arena). `server.py` sets `trim_threshold` to
  64 MiB and `mmap_threshold` to 4 MiB for upload speed, so buffers below 4 MiB come from the
  heaps and their freed space stays there. A `malloc_trim(0)` every 30 s (scratch build) gives
  it back: after each trim the S3 server's RSS falls to 196-202 MiB, level over the 7 minutes
  measured, and climbs 15-20 MiB again within the next 20 s. The only growth `tracemalloc`
  sees is the table of interned strings: pathlib interns every component of a path, so each blob
  served with `FileResponse` (its digest) and each upload's lock file (its id) adds an entry;
  the table is rebuilt at the same size every several minutes, which moves ~1 MiB (0.9 MiB
  more once, when it grows to 2^17 slots).
- **On S3, 10 minutes is not enough.** glibc's heaps there keep growing, fast at first, then in
  rarer steps: RSS 207 MiB at 1 minute, 229 at 10, 233 at 20, 241 at 30 (3 MiB/min in the
  first 10 minutes, 0.4-0.8 after). The 10-minute soak judges minutes 3 to 10 and fails on the
  slope (1.83 and 1.38 MiB/min in two runs) while the growth stays within 5 % (+4.6 %, +3.4 %);
  the 30-minute soak judges minutes 9 to 30 and passes (0.53 MiB/min, +3.3 %). Not a leak: over
  26 minutes of the scratch build, the lowest heap in use of every 3 minutes (sampled each
  second) stayed at 15.1-15.6 MiB per worker from minute 3 on, Python's objects and blocks
  flat, while glibc's free memory grew from 20 to 32 and from 25 to 36 MiB. Nothing in glibc
  caps that soon: it gives a heap's free top back only past `trim_threshold` (64 MiB, and a
  worker has several heaps: obstore's threads get their own), free space inside a heap only on
  `malloc_trim`. Limiting glibc to 2 arenas (`glibc.malloc.arena_max=2`) lowered RSS by ~20 MiB
  but not the slope (1.21 MiB/min); a lower `trim_threshold` or a periodic `malloc_trim` would
  bound it, at a cost to uploads to be measured with `make bench` first. Judge S3 with
  `make soak SOAK_ARGS='--backend s3 --duration 1800'`.
- **The metadata database grows, its WAL in steps.** Before garbage collection metadata.db
  grew with the rows of pushed blobs (0.45 to 0.85 MiB in 4 minutes): unlinking a blob kept its
  row; the collector now deletes the rows of what it collects. The WAL file never shrinks (no
  `journal_size_limit`): its size is the most written between two resets of the WAL, one
  second of writes or a few when a checkpoint is late, 6 to 12 MiB at this load (both files:
  7.0 to 15.6 MiB over the 10-minute run before the collector). With the collector both files
  went from 7.4 to 18.0 MiB in the 2-minute run, in steps (7.7 at 30 s, 11.3 from 40 to 100 s,
  16.1 and 18.0 at the last two samples): not looked into yet; the 10-minute run will show
  whether it levels off. Neither moves memory or latency here.

"""


def section_key(result: SoakResult) -> str:
    """Which section of docs/soak.md a run replaces: one per backend and duration."""
    return f"{result.options['backend']}:{result.options['duration']:g}"


def _order(key: str) -> tuple[int, float]:
    backend, _, duration = key.partition(":")
    return (0 if backend == "embedded" else 1, float(duration or 0))


def write_doc(key: str | None, report: str = "", path: Path = DOC) -> None:
    """Replace section `key` of the document with `report`, keeping the others (None: only
    rewrite the text before the sections)."""
    sections: dict[str, str] = {}
    if path.exists():
        parts = path.read_text().split("<!-- soak:")[1:]
        for part in parts:
            name, _, rest = part.partition(" -->")
            sections[name] = rest.strip("\n")
    if key is not None:
        sections[key] = report.strip("\n")
    body = DOC_HEAD + DOC_CRITERIA + DOC_FINDINGS + "## Results\n"
    for name in sorted(sections, key=_order):
        body += "\n" + SECTION.format(name) + "\n\n" + sections[name] + "\n"
    path.write_text(body)


DOC_CRITERIA = """## Criteria, and why these thresholds

Every 10 s (5 s in the 60-second test): VmRSS of the supervisor and of each worker (/proc), their
open file descriptors, the metadata database's size, the size of the blob storage, CPU used by
the server, the clients and anything else on the machine, and the p50 and p99 of every request
of the window before. The first 10 % of the run is warm-up (30 % on S3), not judged.

- **Errors: none.** Any status the client's model did not predict (during the load or the
  drain), a body or digest that differs from what was pushed, an exception or timeout, an ERROR
  line or traceback in the server's log, a warning of the collector (`garbage collection
  failed`, `skipped`, bytes it `cannot delete`), a worker restart (the server's set of
  processes changed), or an upload left staged or a per-upload lock file left behind once the
  load stops.
- **Memory: no growth trend.** Both must hold over the judged samples of the summed RSS:
  - its **slope at most 1 MiB/min** (6 MiB/min in the 60-second test). The slope is Theil-Sen's,
    the median of the slopes between every two samples: a leak raises every later sample, so all
    pairs agree, while a one-off step of the allocator tilts fewer than half of them. What a
    healthy server shows is glibc keeping freed memory (see "What it found"): on the embedded
    backend 0.2-0.5 MiB/min over 10 minutes (four runs), in steps that get rarer. 1 MiB/min is
    twice that; at ~250 requests/s it is ~70 bytes per request (the report gives the slope per
    request too). Shown by injecting a leak (a module-level list in the request middleware of a
    scratch copy, appending `bytes(N)` per request): 128 bytes per request fails the 10-minute
    soak (2.9 MiB/min measured, 221 bytes per request, +10.6 %). A leak first fills the free
    memory glibc already holds (4-6 MiB per worker), so RSS shows small leaks late: the
    60-second test, which judges 50 s, catches 1 KiB per request (12.6 MiB/min measured, 1,014
    bytes per request; +5.6 %) but not 512 or 256 bytes, and a healthy 60-second run measures
    1.0-1.3 MiB/min (two runs), all of it warm-up: hence 6 MiB/min there. Small leaks are the
    10-minute soak's to find.
  - the **median of the last third of the samples at most 5 % above the first third's**
    (medians: one step at either end does not move them). 5 % of ~165 MiB is 8 MiB; healthy
    embedded runs measured +0.9 to +1.8 %.
- **p99 stable: the median of the window p99s of the last third at most 2x that of the first
  third** (3x in the 60-second test). Each window's p99 covers every request in it, uploads and
  HEADs alike; the mix is random but the same throughout. The machine is shared: single windows
  went from 15 to 140 ms in one healthy run as other work came and went (the "other" cores
  column), but a median of 18 windows moves little. A server that slows down with time (a
  growing WAL, a list scanned per request, a queue building up) doubles its p99 well within 10
  minutes. In 60 s there are three 5-second windows per third and a burst of other work can take
  one, hence the wider factor. Absolute latencies are not judged: they depend on the machine and
  on what else runs on it.
- **Space reclaimed: after the drain, the blob storage back to its size at the start plus 5 %
  of its peak, within the grace delay + 120 s of the deletes.** The blob storage is the bytes
  of the files under `<data dir>/blobs` (embedded) or of the objects under `<prefix>/blobs/` in
  the bucket (S3), sampled with the memory and then polled after the drain (every 0.2 s
  embedded, every second on S3) until within bounds. Issue 12 asks for "its starting size
  (within 5 %)", but the load starts on an empty registry and 5 % of nothing would ask for the
  last byte to be gone: so the allowance is 5 % of the peak (7 MiB of the 145 MiB peak of the
  2-minute run below; the largest blob is 4 MiB). With a 2-second delay and a 1-second interval
  the space comes back within seconds; 120 s more is room for a slow machine, not an
  expectation. The report gives the peak, the bytes at the end and the seconds from the
  drain's first DELETE until within bounds. Also, the server's log must hold the collector's
  lines (`garbage collection: N links and M blobs removed, ...`, one per collection that
  removed something): a soak whose collector never ran would otherwise go unnoticed as long as
  the space stayed small. The metadata database is not judged here: SQLite reuses the pages of
  deleted rows but does not give them back to the file system.

"""


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--backend", choices=("embedded", "s3"), default="embedded")
    p.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    p.add_argument(
        "--rate",
        type=float,
        default=Options.rate,
        help=f"scenarios per second, all clients together (default {Options.rate:g}; 0: unpaced)",
    )
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, help="seconds not judged (default: 10 %%, >= 2 samples)")
    p.add_argument("--workers", type=int, default=2, help="cargobay workers (default 2)")
    p.add_argument(
        "--gc-delay",
        type=int,
        default=Options.gc_delay,
        help=f"the collector's grace delay, seconds (default {Options.gc_delay})",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-root", type=Path, help="parent of the temporary data directory")
    p.add_argument("--keep-data", action="store_true")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="do not run: render a stored result (bench/results/soak-*.json) again",
    )
    p.add_argument(
        "--write", action="store_true", help=f"write the results to {DOC.relative_to(ROOT)}"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        result = load_result(args.render)
        report = render(result, result.options.get("argv") or _argv(result.options))
        print(report)
        if args.write:
            write_doc(section_key(result), report)
            print(f"written to {DOC}", file=sys.stderr)
        return 0 if result.passed else 1
    options = Options(
        duration=args.duration,
        backend=args.backend,
        clients=args.clients,
        rate=args.rate,
        interval=args.interval,
        warmup=args.warmup,
        workers=args.workers,
        gc_delay=args.gc_delay,
        seed=args.seed,
        data_root=args.data_root,
        keep_data=args.keep_data,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    result = run_soak(options)
    result.options["argv"] = shlex.join(sys.argv[1:] if argv is None else argv)
    report = render(result, result.options["argv"])
    print(report)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = RESULTS / f"soak-{stamp}-{args.backend}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(result.to_json(), indent=1, default=str))
    if args.write:
        write_doc(section_key(result), report)
        print(f"written to {DOC}; raw numbers: {raw}", file=sys.stderr)
    else:
        print(f"raw numbers: {raw}", file=sys.stderr)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
