"""Memory scenarios: does a registry's RSS stay flat while multi-GiB blobs stream through it?

The goal (performance issue): RSS grows by less than 50 MiB while pushing a 2 GiB blob, while 16
clients pull 1 GiB blobs, and while a 2 GiB chunked upload arrives in 5 MiB chunks. Blobs must be
streamed, never held whole in memory.

Each scenario runs once per registry, with no warm-up: a warm-up would let a garbage-collected
server (distribution) start from a heap already grown by the same operation, hiding what the
operation costs; cargobay's one-time costs of a first request are ~2 MiB. Clients are forked
processes; the blob's bytes are generated on the fly from a repeating pseudo-random 1 MiB block
whose first 16 bytes vary (seed + block index), so no process ever holds a blob; digests are
computed beforehand by streaming the same generator through hashlib. While the operation runs, the
parent samples the server's RSS (VmRSS summed over the server process and its descendants:
cargobay's supervisor and workers) every 50 ms; the baseline is the median of 5 samples taken just
before it starts. The sum of VmHWM (peak RSS per process, reset just before via
/proc/<pid>/clear_refs) is recorded too: it catches spikes between samples, but adds up per-process
peaks that may not coincide. Blob files are deleted behind the server's back afterwards to bound
disk use.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import statistics
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from bench.http import Connection, HTTPError, Response, with_query
from bench.servers import Server, forget_blobs

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
BLOCK = MiB  # the repeating unit of generated blob bytes
PREFIX = 16  # bytes of each block that vary: 8-byte seed + 8-byte block index
CHUNK = 5 * MiB
LIMIT_MIB = 50.0
SAMPLE_INTERVAL = 0.05
REPO = "bench/memory"
OCTET = {"Content-Type": "application/octet-stream"}
CLIENT_TIMEOUT = 600.0

_ctx = mp.get_context("fork")


@dataclass(frozen=True)
class MemoryCase:
    id: str
    title: str
    kind: str  # "push_mono", "push_chunked", "pull"
    size: int
    concurrency: int = 1


def memory_cases() -> list[MemoryCase]:
    mono = "push 2 GiB monolithic (POST + PUT)"
    chunked = "push 2 GiB chunked (5 MiB PATCHes + PUT)"
    return [
        MemoryCase("memory-push-mono-2GiB", mono, "push_mono", 2 * GiB),
        MemoryCase("memory-pull-1GiB-c16", "16 clients GET a 1 GiB blob", "pull", GiB, 16),
        MemoryCase("memory-push-chunked-2GiB", chunked, "push_chunked", 2 * GiB),
    ]


# -- generated blobs --------------------------------------------------------------------------


class GeneratedBlob:
    """`size` bytes made of one pseudo-random 1 MiB block repeated, each copy's first 16 bytes
    replaced by (seed, index). Deterministic from the seed, so any process can regenerate it."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self._digest = ""

    def blocks(self) -> Iterator[memoryview]:
        """The blob's bytes in 1 MiB views of one buffer, rewritten in place between yields:
        consume each view before asking for the next."""
        buf = bytearray(random.Random(self.seed).randbytes(BLOCK))
        view = memoryview(buf)
        seed = self.seed.to_bytes(8, "big")
        offset = index = 0
        while offset < self.size:
            buf[:PREFIX] = seed + index.to_bytes(8, "big")
            n = min(BLOCK, self.size - offset)
            yield view[:n]
            offset += n
            index += 1

    @property
    def digest(self) -> str:
        if not self._digest:
            h = hashlib.sha256()
            for block in self.blocks():
                h.update(block)
            self._digest = "sha256:" + h.hexdigest()
        return self._digest


def stream_request(
    conn: Connection,
    method: str,
    target: str,
    headers: dict[str, str],
    length: int,
    blocks: Iterator[memoryview],
) -> Response:
    """A request whose body (`length` bytes) is sent block by block as `blocks` yields it."""
    if conn.sock is None:
        conn.connect()
    assert conn.sock is not None
    lines = [
        f"{method} {target} HTTP/1.1\r\n",
        f"Host: {conn.host}:{conn.port}\r\n",
        f"Content-Length: {length}\r\n",
        *(f"{k}: {v}\r\n" for k, v in headers.items()),
        "\r\n",
    ]
    try:
        conn.sock.sendall("".join(lines).encode())
        sent = 0
        for block in blocks:
            conn.sock.sendall(block)
            sent += len(block)
            if sent >= length:
                break
        if sent != length:
            raise HTTPError(f"body generator ran out after {sent} of {length} bytes")
        return conn._receive(method, True)
    except (OSError, HTTPError):
        conn.close()
        raise


def push_mono(conn: Connection, blob: GeneratedBlob) -> None:
    location = conn.request("POST", f"/v2/{REPO}/blobs/uploads/").expect(202, what="POST")
    target = with_query(location.location(), digest=blob.digest)
    stream_request(conn, "PUT", target, OCTET, blob.size, blob.blocks()).expect(201, what="PUT")


def push_chunked(conn: Connection, blob: GeneratedBlob, chunk: int = CHUNK) -> None:
    assert chunk % BLOCK == 0
    location = (
        conn.request("POST", f"/v2/{REPO}/blobs/uploads/").expect(202, what="POST").location()
    )
    blocks = blob.blocks()
    for start in range(0, blob.size, chunk):
        end = min(start + chunk, blob.size)
        headers = {**OCTET, "Content-Range": f"{start}-{end - 1}"}
        response = stream_request(conn, "PATCH", location, headers, end - start, blocks)
        location = response.expect(202, what="PATCH").location()
    conn.request("PUT", with_query(location, digest=blob.digest)).expect(201, what="final PUT")


def pull(conn: Connection, blob: GeneratedBlob) -> None:
    target = f"/v2/{REPO}/blobs/{blob.digest}"
    response = conn.request("GET", target, keep_body=False).expect(200, what="GET")
    if response.length != blob.size:
        raise HTTPError(f"GET returned {response.length} bytes, expected {blob.size}")


# -- RSS of a process tree --------------------------------------------------------------------


def _status_kib(pid: int, *keys: str) -> dict[str, int]:
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in keys:
                found[name] = int(value.split()[0])
    return found


class RssSampler:
    """Samples VmRSS of a server's process tree (summed, and per process)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.pids = server.pids()
        self.samples: list[tuple[float, int]] = []  # (monotonic time, summed bytes)
        self.peak_by_pid: dict[int, int] = {}

    def sample(self) -> int:
        total = 0
        for pid in self.pids:
            rss = _status_kib(pid, "VmRSS").get("VmRSS", 0) * KiB
            total += rss
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), rss)
        self.samples.append((time.monotonic(), total))
        return total

    def baseline(self, count: int = 5) -> int:
        values = []
        for i in range(count):
            if i:
                time.sleep(SAMPLE_INTERVAL)
            values.append(self.sample())
        self.samples.clear()
        self.peak_by_pid.clear()
        return int(statistics.median(values))

    def reset_hwm(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def hwm(self) -> int:
        return sum(_status_kib(pid, "VmHWM").get("VmHWM", 0) for pid in self.pids) * KiB


# -- running a scenario -----------------------------------------------------------------------


def _client(server: Server, case: MemoryCase, blob: GeneratedBlob, barrier: Any, out: Pipe) -> None:
    result: dict[str, Any] = {"error": "", "seconds": 0.0}
    try:
        with Connection(server.host, server.port, timeout=CLIENT_TIMEOUT) as conn:
            conn.request("GET", "/v2/").expect(200, what="GET /v2/")  # connected, kept alive
            barrier.wait(timeout=CLIENT_TIMEOUT)
            t = time.perf_counter()
            if case.kind == "push_mono":
                push_mono(conn, blob)
            elif case.kind == "push_chunked":
                push_chunked(conn, blob)
            else:
                pull(conn, blob)
            result["seconds"] = time.perf_counter() - t
    except Exception as exc:
        with contextlib.suppress(Exception):
            barrier.abort()
        result["error"] = f"{exc!r}"[:500]
        result["traceback"] = traceback.format_exc()[-2000:]
    out.send(result)


def _operate(
    server: Server, case: MemoryCase, blob: GeneratedBlob, sampler: RssSampler
) -> dict[str, Any]:
    """Run the case's clients on `blob`, sampling the server's RSS meanwhile."""
    barrier = _ctx.Barrier(case.concurrency + 1)
    clients = []
    for _ in range(case.concurrency):
        reader, writer = _ctx.Pipe(duplex=False)
        proc = _ctx.Process(target=_client, args=(server, case, blob, barrier, writer))
        proc.daemon = True
        proc.start()
        writer.close()
        clients.append((proc, reader))
    out: dict[str, Any] = {}
    out["baseline"] = sampler.baseline()
    sampler.reset_hwm()
    sampler.sample()
    start = time.perf_counter()
    with contextlib.suppress(Exception):  # BrokenBarrierError: a client failed to connect
        barrier.wait(timeout=60)
    pending = {reader: proc for proc, reader in clients}
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while pending and time.monotonic() < deadline:
        for ready in wait(list(pending), timeout=SAMPLE_INTERVAL):
            assert isinstance(ready, Pipe)
            proc = pending.pop(ready)
            try:
                results.append(ready.recv())
            except EOFError:
                results.append({"error": f"client process {proc.pid} died", "seconds": 0.0})
        sampler.sample()
    out["seconds"] = time.perf_counter() - start
    for reader, proc in pending.items():
        results.append({"error": f"client {proc.pid} timed out", "seconds": 0.0})
        proc.kill()
        reader.close()
    for proc, _ in clients:
        proc.join(timeout=10)
    errors = [r["error"] for r in results if r["error"]]
    out["errors"] = len(errors)
    out["error"] = errors[0] if errors else ""
    out["hwm"] = sampler.hwm()
    time.sleep(0.5)  # what the server keeps once it is done
    out["after"] = sampler.sample()
    return out


def prepare(cases: list[MemoryCase]) -> dict[str, GeneratedBlob]:
    """Per case, its blob with the digest computed (the same bytes for every server: each has
    its own data directory)."""
    blobs = {}
    for n, case in enumerate(cases):
        blob = GeneratedBlob(case.size, seed=1000 + n)
        _ = blob.digest
        blobs[case.id] = blob
    return blobs


def run_memory_case(server: Server, case: MemoryCase, blob: GeneratedBlob) -> dict[str, Any]:
    """Run the case once while sampling the server's RSS; delete the blob afterwards."""
    result: dict[str, Any] = {"errors": 0, "error": ""}
    try:
        if case.kind == "pull":  # the blob to pull is pushed first, not measured
            with Connection(server.host, server.port, timeout=CLIENT_TIMEOUT) as conn:
                push_mono(conn, blob)
            os.sync()  # writeback of the pushed bytes is not part of the measured pull
        sampler = RssSampler(server)
        run = _operate(server, case, blob, sampler)
    finally:
        forget_blobs(server, [blob.digest])
    samples = sampler.samples
    peak = max(rss for _, rss in samples)
    baseline = run["baseline"]
    moved = case.size * case.concurrency
    result.update(
        errors=run["errors"],
        error=run["error"],
        seconds=run["seconds"],
        mib_per_s=moved / MiB / run["seconds"] if not run["errors"] else float("nan"),
        samples=len(samples),
        baseline_mib=baseline / MiB,
        peak_mib=peak / MiB,
        growth_mib=(peak - baseline) / MiB,
        hwm_growth_mib=(run["hwm"] - baseline) / MiB,
        after_mib=run["after"] / MiB,
        peak_by_process_mib=[sampler.peak_by_pid.get(pid, 0) / MiB for pid in sampler.pids],
        passed=not run["errors"] and (peak - baseline) / MiB < LIMIT_MIB,
    )
    return result
