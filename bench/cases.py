"""Benchmark cases, the fixtures they need, seeding through the registry API, and the load driver.

Every case runs `concurrency` client processes (forked, so payload buffers are shared
copy-on-write), each with one keep-alive connection. A worker prepares everything outside the
measured time (digests, manifests, a warm-up request), waits on a barrier, then runs operations
until the case's time or operation budget is spent. Pushes use distinct bytes per operation: a
shared random buffer whose last 32 bytes are replaced by random bytes; the sha256 state of the
constant prefix is computed once, so each digest costs one 32-byte update.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import time
import traceback
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench.http import Connection, HTTPError, with_query
from bench.servers import Server, forget_blobs

KiB = 1 << 10
MiB = 1 << 20
SUFFIX = 32
CHUNK = 5 * MiB
PULL_BLOBS = 8  # distinct blobs per pull size: one per client at c8
IMAGE_LAYERS = 5
IMAGE_LAYER_SIZE = 8 * MiB
MAX_ERRORS = 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = {
    "Accept": f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.index.v1+json"
}
OCTET = {"Content-Type": "application/octet-stream"}

REPO_PUSH = "bench/push"
REPO_PULL = "bench/pull"
REPO_MANIFESTS = "bench/manifests"
REPO_IMAGE = "bench/image"
REPO_TAGS_SMALL = "bench/tags-small"
REPO_TAGS_LARGE = "bench/tags-large"
CATALOG_PREFIX = "catalog/r"

_ctx = mp.get_context("fork")


@dataclass(frozen=True)
class Settings:
    duration: float = 3.0  # seconds per case per server per round (or max_ops, first reached)
    rounds: int = 3
    tags_small: int = 1_000
    tags_large: int = 100_000
    repos: int = 10_000
    ops_scale: float = 1.0  # multiplies every case's max_ops
    seed_procs: int = 8


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    kind: str
    unit: str  # the headline throughput unit: "MiB/s", "ops/s", "tags/s", "repos/s", ...
    size: int = 0
    concurrency: int = 1
    max_ops: int = 1_000_000

    @property
    def pushes(self) -> bool:
        return self.kind.startswith("push")


def size_label(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB"


def all_cases(s: Settings) -> list[Case]:
    cases: list[Case] = []

    def add(id_: str, title: str, kind: str, unit: str, size: int, c: int, max_ops: int) -> None:
        max_ops = max(c, int(max_ops * s.ops_scale))
        cases.append(Case(id_, title, kind, unit, size, c, max_ops))

    for size, max_ops in ((KiB, 30_000), (MiB, 6_000), (64 * MiB, 48)):
        label = size_label(size)
        for c in (1, 8):
            unit = "MiB/s" if size >= MiB else "ops/s"
            title = f"blob push monolithic {label} c{c}"
            add(f"push-mono-{label.replace(' ', '')}-c{c}", title, "push_mono", unit, size, c,
                max_ops)  # fmt: skip
    for c in (1, 8):
        title = f"blob push chunked 64 MiB (5 MiB PATCHes) c{c}"
        add(f"push-chunked-64MiB-c{c}", title, "push_chunked", "MiB/s", 64 * MiB, c, 48)
    for size, max_ops in ((MiB, 100_000), (64 * MiB, 2_000)):
        label = size_label(size)
        for c in (1, 8):
            add(f"pull-{label.replace(' ', '')}-c{c}", f"blob GET {label} c{c}", "pull_get",
                "MiB/s", size, c, max_ops)  # fmt: skip
        for c in (1, 8):
            add(f"head-{label.replace(' ', '')}-c{c}", f"blob HEAD {label} c{c}", "pull_head",
                "ops/s", size, c, 200_000)  # fmt: skip
    for c in (1, 16):
        add(f"manifest-put-c{c}", f"manifest PUT by tag c{c}", "manifest_put", "ops/s", 0, c,
            20_000)  # fmt: skip
        add(f"manifest-get-c{c}", f"manifest GET by tag c{c}", "manifest_get", "ops/s", 0, c,
            200_000)  # fmt: skip
    for kind, count in (("tags_small", s.tags_small), ("tags_large", s.tags_large)):
        # Pages of 100 are what the issue asks for; distribution 2.8.2 ignores `n` and answers
        # every page with the whole list, so the whole-list case (what skopeo and containerd
        # do: no `n`, follow Link) is the like-for-like comparison of listing throughput.
        title = f"tags list, {count:,} tags, pages of 100, c1"
        add(kind.replace("_", "-"), title, kind, "pages/s", count, 1, 100_000)
        title = f"tags list, {count:,} tags, whole list (no n, follow Link), c1"
        add(kind.replace("_", "-") + "-all", title, kind + "_all", "tags/s", count, 1, 100_000)
    title = f"catalog, {s.repos:,} repositories, pages of 100, c1"
    add("catalog", title, "catalog", "repos/s", s.repos, 1, 100_000)
    title = f"docker pull mix (manifest + config + {IMAGE_LAYERS} x 8 MiB layers) c8"
    add("docker-pull", title, "docker_pull", "MiB/s", IMAGE_LAYERS * IMAGE_LAYER_SIZE, 8, 2_000)
    return cases


# -- payloads and fixtures (built once in the parent, inherited by forked workers) --------------


def sha256(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Payload:
    """A random buffer whose last SUFFIX bytes are swapped to make distinct blobs cheaply."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray(os.urandom(size))
        self.view = memoryview(self.buf)
        self._prefix = hashlib.sha256(self.view[: size - SUFFIX])

    def digest(self, suffix: bytes) -> str:
        h = self._prefix.copy()
        h.update(suffix)
        return "sha256:" + h.hexdigest()

    def set(self, suffix: bytes) -> memoryview:
        self.buf[-SUFFIX:] = suffix
        return self.view


def seed_suffix(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()[:SUFFIX]


@dataclass
class Fixture:
    payloads: dict[int, Payload]
    config: bytes
    layer: bytes
    manifest: bytes  # references config + layer; pushed to REPO_MANIFESTS:latest and all tags
    pull: dict[int, list[str]] = field(default_factory=dict)  # size -> digests in REPO_PULL
    image_config: bytes = b""
    image_manifest: bytes = b""

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def layer_digest(self) -> str:
        return sha256(self.layer)


def image_manifest(config: bytes, layers: Sequence[tuple[str, int]], **annotations: str) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": n} for d, n in layers],
    }
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, separators=(",", ":")).encode()


def build_fixture(cases: Iterable[Case]) -> Fixture:
    kinds = {c.kind for c in cases}
    sizes = {c.size for c in cases if c.pushes or c.kind in ("pull_get", "pull_head")}
    if "docker_pull" in kinds:
        sizes.add(IMAGE_LAYER_SIZE)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
        separators=(",", ":"),
    ).encode()
    layer = os.urandom(KiB)
    fixture = Fixture(
        payloads={size: Payload(size) for size in sorted(sizes)},
        config=config,
        layer=layer,
        manifest=image_manifest(config, [(sha256(layer), len(layer))]),
    )
    for size in sorted({c.size for c in cases if c.kind in ("pull_get", "pull_head")}):
        payload = fixture.payloads[size]
        fixture.pull[size] = [
            payload.digest(seed_suffix(f"pull-{size}-{i}")) for i in range(PULL_BLOBS)
        ]
    if "docker_pull" in kinds:
        payload = fixture.payloads[IMAGE_LAYER_SIZE]
        fixture.image_config = config.replace(b"{", b'{"created":"bench",', 1)
        layers = [
            (payload.digest(seed_suffix(f"image-{i}")), IMAGE_LAYER_SIZE)
            for i in range(IMAGE_LAYERS)
        ]
        fixture.image_manifest = image_manifest(fixture.image_config, layers)
    return fixture


# -- registry operations shared by seeding and cases --------------------------------------------


def push_blob(conn: Connection, repo: str, data: bytes | memoryview, digest: str) -> None:
    location = (
        conn.request("POST", f"/v2/{repo}/blobs/uploads/").expect(202, what="POST").location()
    )
    conn.request("PUT", with_query(location, digest=digest), OCTET, data).expect(201, what="PUT")


def push_blob_chunked(
    conn: Connection, repo: str, data: memoryview, digest: str, chunk: int = CHUNK
) -> None:
    location = (
        conn.request("POST", f"/v2/{repo}/blobs/uploads/").expect(202, what="POST").location()
    )
    size = len(data)
    for start in range(0, size, chunk):
        end = min(start + chunk, size)
        headers = {**OCTET, "Content-Range": f"{start}-{end - 1}"}
        response = conn.request("PATCH", location, headers, data[start:end])
        location = response.expect(202, what="PATCH").location()
    conn.request("PUT", with_query(location, digest=digest)).expect(201, what="final PUT")


def mount_blob(conn: Connection, repo: str, digest: str, source: str) -> None:
    target = f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}"
    conn.request("POST", target).expect(201, what="mount")


def put_manifest(conn: Connection, repo: str, reference: str, manifest: bytes) -> None:
    headers = {"Content-Type": OCI_MANIFEST}
    conn.request("PUT", f"/v2/{repo}/manifests/{reference}", headers, manifest).expect(
        201, what="manifest PUT"
    )


def parallel(
    server: Server, items: Sequence[Any], fn: Callable[[Connection, Any], None], procs: int
) -> None:
    """Run fn(conn, item) over items in `procs` forked processes, contiguous slices each."""
    procs = max(1, min(procs, len(items)))
    per = math.ceil(len(items) / procs)
    children = []
    for p in range(procs):
        part = items[p * per : (p + 1) * per]
        reader, writer = _ctx.Pipe(duplex=False)
        child = _ctx.Process(target=_parallel_child, args=(server, part, fn, writer))
        child.start()
        writer.close()
        children.append((child, reader))
    errors = []
    for child, reader in children:
        try:
            message = reader.recv()
        except EOFError:
            message = f"seeding process {child.pid} died"
        if message:
            errors.append(message)
        child.join()
    if errors:
        raise RuntimeError(f"seeding {server.label} failed: {errors[0]}")


def _parallel_child(
    server: Server, items: Sequence[Any], fn: Callable[..., None], out: Pipe
) -> None:
    try:
        with Connection(server.host, server.port) as conn:
            for item in items:
                fn(conn, item)
        out.send("")
    except Exception:
        out.send(traceback.format_exc())


def seed(server: Server, cases: Sequence[Case], fx: Fixture, s: Settings) -> dict[str, float]:
    """Create what the cases read, through the registry API. Returns seconds per step."""
    kinds = {c.kind for c in cases}
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with Connection(server.host, server.port) as conn:
        push_blob(conn, REPO_MANIFESTS, fx.config, fx.config_digest)
        push_blob(conn, REPO_MANIFESTS, fx.layer, fx.layer_digest)
        put_manifest(conn, REPO_MANIFESTS, "latest", fx.manifest)
        for size, digests in fx.pull.items():
            payload = fx.payloads[size]
            for i, digest in enumerate(digests):
                push_blob(conn, REPO_PULL, payload.set(seed_suffix(f"pull-{size}-{i}")), digest)
        if "docker_pull" in kinds:
            payload = fx.payloads[IMAGE_LAYER_SIZE]
            push_blob(conn, REPO_IMAGE, fx.image_config, sha256(fx.image_config))
            for i in range(IMAGE_LAYERS):
                suffix = seed_suffix(f"image-{i}")
                push_blob(conn, REPO_IMAGE, payload.set(suffix), payload.digest(suffix))
            put_manifest(conn, REPO_IMAGE, "v1", fx.image_manifest)
        for kind, repo in (("tags_small", REPO_TAGS_SMALL), ("tags_large", REPO_TAGS_LARGE)):
            if kind in kinds or f"{kind}_all" in kinds:
                mount_blob(conn, repo, fx.config_digest, REPO_MANIFESTS)
                mount_blob(conn, repo, fx.layer_digest, REPO_MANIFESTS)
    timings["blobs"] = time.perf_counter() - t

    def tag(conn: Connection, item: tuple[str, int]) -> None:
        put_manifest(conn, item[0], f"t{item[1]:06d}", fx.manifest)

    def repository(conn: Connection, index: int) -> None:
        repo = f"{CATALOG_PREFIX}{index:05d}"
        mount_blob(conn, repo, fx.config_digest, REPO_MANIFESTS)
        mount_blob(conn, repo, fx.layer_digest, REPO_MANIFESTS)
        put_manifest(conn, repo, "latest", fx.manifest)

    for kind, repo, count in (
        ("tags_small", REPO_TAGS_SMALL, s.tags_small),
        ("tags_large", REPO_TAGS_LARGE, s.tags_large),
    ):
        if kind in kinds or f"{kind}_all" in kinds:
            t = time.perf_counter()
            parallel(server, [(repo, i) for i in range(count)], tag, s.seed_procs)
            timings[f"{count} tags"] = time.perf_counter() - t
    if "catalog" in kinds:
        t = time.perf_counter()
        parallel(server, range(s.repos), repository, s.seed_procs)
        timings[f"{s.repos} repositories"] = time.perf_counter() - t
    return timings


# -- the load driver ----------------------------------------------------------------------------

Op = Callable[[int], tuple[int, int]]  # operation index -> (bytes moved, items listed)


def make_op(case: Case, conn: Connection, fx: Fixture, worker: int, n: int, out: list[str]) -> Op:
    """Prepare n + 1 operations (the last one is the warm-up) and return the op function.
    `out` collects digests pushed, for cleanup."""
    kind = case.kind
    if case.pushes:
        payload = fx.payloads[case.size]
        suffixes = [os.urandom(SUFFIX) for _ in range(n + 1)]
        digests = [payload.digest(suffix) for suffix in suffixes]
        push = push_blob if kind == "push_mono" else push_blob_chunked

        def push_op(i: int) -> tuple[int, int]:
            push(conn, REPO_PUSH, payload.set(suffixes[i]), digests[i])
            out.append(digests[i])
            return payload.size, 0

        return push_op
    if kind in ("pull_get", "pull_head"):
        size = case.size
        digests = fx.pull[size]
        target = f"/v2/{REPO_PULL}/blobs/{digests[worker % len(digests)]}"
        if kind == "pull_head":

            def head_op(i: int) -> tuple[int, int]:
                response = conn.request("HEAD", target, follow=True).expect(200, what="HEAD")
                if int(response.headers.get("content-length", -1)) != size:
                    raise HTTPError(f"HEAD Content-Length {response.headers}")
                return 0, 0

            return head_op

        def get_op(i: int) -> tuple[int, int]:
            response = conn.request("GET", target, keep_body=False, follow=True)
            response.expect(200, what="GET")
            if response.length != size:
                raise HTTPError(f"GET returned {response.length} bytes, expected {size}")
            return size, 0

        return get_op
    if kind == "manifest_put":
        token = os.urandom(4).hex()
        refs = [(fx.layer_digest, len(fx.layer))]
        manifests = [
            image_manifest(fx.config, refs, **{"bench.op": f"{token}-{worker}-{i}"})
            for i in range(n + 1)
        ]
        tags = [f"w{token}-{worker}-{i}" for i in range(n + 1)]

        def manifest_put_op(i: int) -> tuple[int, int]:
            put_manifest(conn, REPO_MANIFESTS, tags[i], manifests[i])
            return len(manifests[i]), 0

        return manifest_put_op
    if kind == "manifest_get":
        target = f"/v2/{REPO_MANIFESTS}/manifests/latest"

        def manifest_get_op(i: int) -> tuple[int, int]:
            response = conn.request("GET", target, ACCEPT).expect(200, what="manifest GET")
            return response.length, 0

        return manifest_get_op
    if kind in ("tags_small", "tags_large", "catalog"):
        if kind == "catalog":
            base, key = "/v2/_catalog?n=100", "repositories"
        else:
            repo = REPO_TAGS_SMALL if kind == "tags_small" else REPO_TAGS_LARGE
            base, key = f"/v2/{repo}/tags/list?n=100", "tags"
        last: list[str | None] = [None]

        def page_op(i: int) -> tuple[int, int]:
            target = base if last[0] is None else f"{base}&last={last[0]}"
            response = conn.request("GET", target).expect(200, what="list")
            items = json.loads(response.body)[key] or []
            last[0] = items[-1] if items and "link" in response.headers else None
            return response.length, len(items)

        return page_op
    if kind in ("tags_small_all", "tags_large_all"):
        repo = REPO_TAGS_SMALL if kind == "tags_small_all" else REPO_TAGS_LARGE

        def whole_list_op(i: int) -> tuple[int, int]:
            target: str | None = f"/v2/{repo}/tags/list"
            moved = items = 0
            while target is not None:
                response = conn.request("GET", target).expect(200, what="list")
                moved += response.length
                items += len(json.loads(response.body)["tags"] or [])
                link = response.headers.get("link")
                target = link[link.index("<") + 1 : link.index(">")] if link else None
            return moved, items

        return whole_list_op
    if kind == "docker_pull":

        def pull_op(i: int) -> tuple[int, int]:
            response = conn.request("GET", f"/v2/{REPO_IMAGE}/manifests/v1", ACCEPT)
            manifest = json.loads(response.expect(200, what="manifest GET").body)
            moved = response.length
            blobs = [manifest["config"]] + manifest["layers"]
            for j, descriptor in enumerate(blobs):
                target = f"/v2/{REPO_IMAGE}/blobs/{descriptor['digest']}"
                response = conn.request("GET", target, keep_body=j == 0, follow=True)
                response.expect(200, what="GET")
                if response.length != descriptor["size"]:
                    raise HTTPError(f"blob GET returned {response.length} bytes")
                moved += response.length
            return moved, 0

        return pull_op
    raise ValueError(f"unknown case kind {kind}")


def _worker(
    server: Server,
    case: Case,
    fx: Fixture,
    worker: int,
    n: int,
    duration: float,
    barrier: Any,
    out: Pipe,
) -> None:
    result: dict[str, Any] = {"ops": 0, "bytes": 0, "items": 0, "errors": 0, "error": ""}
    pushed: list[str] = []
    try:
        conn = Connection(server.host, server.port)
        op = make_op(case, conn, fx, worker, n, pushed)
        op(n)  # warm-up: connection open, server paths hot
        conn.redirects = 0
    except Exception as exc:
        result["error"] = f"setup: {exc!r}"
        barrier.abort()
        out.send(result)
        return
    latencies = array("d")
    ops = moved = items = errors = 0
    try:
        barrier.wait()
    except Exception as exc:  # BrokenBarrierError: another worker failed its setup
        result["error"] = f"barrier: {exc!r}"
        out.send(result)
        return
    cpu0 = os.times()
    start = now = time.perf_counter()
    deadline = start + duration
    while ops < n and now < deadline:
        try:
            b, k = op(ops)
        except (OSError, HTTPError) as exc:
            errors += 1
            if not result["error"]:
                result["error"] = repr(exc)[:500]
            if errors >= MAX_ERRORS:
                break
            now = time.perf_counter()
            continue
        end = time.perf_counter()
        latencies.append(end - now)
        now = end
        ops += 1
        moved += b
        items += k
    cpu1 = os.times()
    conn.close()
    result.update(
        ops=ops,
        bytes=moved,
        items=items,
        errors=errors,
        start=start,
        end=now,
        client_cpu=(cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        redirects=conn.redirects,
        latencies=latencies.tobytes(),
        pushed=pushed,
    )
    out.send(result)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def run_case(server: Server, case: Case, fx: Fixture, duration: float) -> dict[str, Any]:
    """Run one case against one server once; return its numbers."""
    c = case.concurrency
    per_worker = max(1, math.ceil(case.max_ops / c))
    barrier = _ctx.Barrier(c + 1)
    workers = []
    for w in range(c):
        reader, writer = _ctx.Pipe(duplex=False)
        args = (server, case, fx, w, per_worker, duration, barrier, writer)
        proc = _ctx.Process(target=_worker, args=args, daemon=True)
        proc.start()
        writer.close()
        workers.append((proc, reader))
    cpu0: dict[int, float] = {}
    backing0: dict[str, float] = {}
    try:
        server.reset_peak_rss()
        cpu0 = server.cpu_by_pid()
        if server.backing is not None:
            backing0 = server.backing.cpu_seconds()
        barrier.wait(timeout=600)
    except Exception:  # BrokenBarrierError: a worker failed its setup
        pass
    results = []
    for proc, reader in workers:
        try:
            results.append(reader.recv())
        except EOFError:
            results.append({"ops": 0, "errors": 1, "error": f"client process {proc.pid} died"})
    cpu1_by_pid = server.cpu_by_pid()
    backing1 = server.backing.cpu_seconds() if server.backing is not None else {}
    peak = server.peak_rss()
    for proc, _ in workers:
        proc.join(timeout=30)

    ran = [r for r in results if "start" in r]
    latencies = sorted(x for r in ran for x in array("d", r["latencies"]))  # seconds
    ops = sum(r["ops"] for r in results)
    wall = (max(r["end"] for r in ran) - min(r["start"] for r in ran)) if ran else math.nan
    errors = sum(r["errors"] for r in results)
    messages = [r["error"] for r in results if r.get("error")]
    pushed = [d for r in results for d in r.get("pushed", [])]
    # CPU per process (the supervisor first): shows whether every worker took a share.
    by_pid = [cpu1_by_pid[p] - cpu0.get(p, 0.0) for p in cpu1_by_pid]
    cpu = sum(by_pid)
    out: dict[str, Any] = {
        "ops": ops,
        "wall_s": wall,
        "bytes": sum(r.get("bytes", 0) for r in results),
        "items": sum(r.get("items", 0) for r in results),
        "errors": errors,
        "error": messages[0] if messages else "",
        "ops_per_s": ops / wall if ops and wall > 0 else 0.0,
        "mib_per_s": sum(r.get("bytes", 0) for r in results) / MiB / wall if ops else 0.0,
        "items_per_s": sum(r.get("items", 0) for r in results) / wall if ops else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "server_cpu_s": cpu,
        "server_cpu_by_process_s": by_pid,
        "server_cpu_ms_per_op": cpu * 1e3 / ops if ops else math.nan,
        "server_cores": cpu / wall if ops and wall > 0 else math.nan,
        "client_cores": sum(r.get("client_cpu", 0.0) for r in results) / wall
        if ops and wall > 0
        else math.nan,
        "peak_rss_bytes": peak,
        "redirects_per_op": sum(r.get("redirects", 0) for r in results) / ops if ops else math.nan,
    }
    if backing1:  # CPU of the object store and the database during the run, per operation
        for name, seconds in backing1.items():
            used = seconds - backing0.get(name, seconds)
            out[f"{name}_cpu_ms_per_op"] = used * 1e3 / ops if ops else math.nan
    if pushed:
        forget_blobs(server, pushed)
    return out


def headline(case: Case, result: dict[str, Any]) -> float:
    """The number the report compares, in case.unit."""
    if case.unit == "MiB/s":
        return float(result["mib_per_s"])
    if case.unit in ("tags/s", "repos/s"):
        return float(result["items_per_s"])
    return float(result["ops_per_s"])
