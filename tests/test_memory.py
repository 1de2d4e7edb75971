"""Blobs stream through the server: its RSS must not grow with the size of a blob.

A real server (one worker) receives a 512 MiB blob monolithically, then another in 5 MiB PATCHes,
then serves one to 4 concurrent clients. Before each operation the peak-RSS counters of the
server's processes are reset (/proc/<pid>/clear_refs); afterwards their VmHWM must exceed the
RSS measured just before by less than 50 MiB. VmHWM is kept by the kernel, so no spike can slip
between samples, and no timing is asserted. The client never holds a blob either: bytes are
generated 1 MiB at a time and downloads are read into one 1 MiB buffer and dropped.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.server import RegistryProcess

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(180),
]

MiB = 1 << 20
BLOB_SIZE = 512 * MiB
CHUNK = 5 * MiB
BLOCK = MiB
PULL_CLIENTS = 4
LIMIT = 50 * MiB
REPO = "memory/test"


class Blob:
    """`size` bytes: one pseudo-random 1 MiB block repeated, each copy's first 16 bytes set to
    (seed, index) so that no two blocks are alike. Generated on the fly, never held whole."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        h = hashlib.sha256()
        for block in self.blocks():
            h.update(block)
        self.digest = "sha256:" + h.hexdigest()

    def blocks(self) -> Iterator[memoryview]:
        """Views of one buffer rewritten in place: consume each before taking the next."""
        buf = bytearray(random.Random(self.seed).randbytes(BLOCK))
        view = memoryview(buf)
        offset = index = 0
        while offset < self.size:
            buf[:16] = self.seed.to_bytes(8, "big") + index.to_bytes(8, "big")
            n = min(BLOCK, self.size - offset)
            yield view[:n]
            offset += n
            index += 1


# -- HTTP, streaming both ways ------------------------------------------------------------------


def _connect(server: RegistryProcess) -> http.client.HTTPConnection:
    host, port = server.host.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=120)


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    length: int = 0,
    body: Iterator[memoryview] | None = None,
) -> http.client.HTTPResponse:
    conn.putrequest(method, target, skip_accept_encoding=True)
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    sent = 0
    while sent < length:
        assert body is not None
        block = next(body)
        conn.send(block)
        sent += len(block)
    assert sent == length
    return conn.getresponse()


def _expect(response: http.client.HTTPResponse, status: int) -> http.client.HTTPResponse:
    body = response.read(64 << 10)
    assert response.status == status, (response.status, body[:500])
    return response


def _start_upload(conn: http.client.HTTPConnection) -> str:
    location = _expect(_request(conn, "POST", f"/v2/{REPO}/blobs/uploads/"), 202)
    return str(location.getheader("Location"))


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def push_monolithic(server: RegistryProcess, blob: Blob) -> None:
    conn = _connect(server)
    try:
        target = _with_digest(_start_upload(conn), blob.digest)
        headers = {"Content-Type": "application/octet-stream"}
        blocks = blob.blocks()
        _expect(_request(conn, "PUT", target, headers=headers, length=blob.size, body=blocks), 201)
    finally:
        conn.close()


def push_chunked(server: RegistryProcess, blob: Blob) -> None:
    conn = _connect(server)
    try:
        location = _start_upload(conn)
        blocks = blob.blocks()
        for start in range(0, blob.size, CHUNK):
            end = min(start + CHUNK, blob.size)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{end - 1}",
            }
            response = _request(
                conn, "PATCH", location, headers=headers, length=end - start, body=blocks
            )
            location = str(_expect(response, 202).getheader("Location"))
        _expect(_request(conn, "PUT", _with_digest(location, blob.digest)), 201)
    finally:
        conn.close()


def pull(server: RegistryProcess, blob: Blob, clients: int) -> None:
    """`clients` concurrent GETs of the blob, each on its own connection, bytes counted and
    dropped."""
    received = [0] * clients
    errors: list[BaseException] = []

    def one(i: int) -> None:
        conn = _connect(server)
        try:
            response = _request(conn, "GET", f"/v2/{REPO}/blobs/{blob.digest}")
            assert response.status == 200, response.status
            buf = bytearray(BLOCK)
            while n := response.readinto(buf):
                received[i] += n
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert received == [blob.size] * clients


# -- the server's memory ------------------------------------------------------------------------


def _server_pids(server: RegistryProcess) -> list[int]:
    """The server process and its descendants (a supervisor's workers)."""
    assert server.process is not None
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree = [server.process.pid]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def growth_during(server: RegistryProcess, operation: Callable[[], None]) -> int:
    """How far the server's peak RSS rose above its RSS just before `operation`, in bytes
    (VmHWM and VmRSS each summed over the server's processes)."""
    pids = _server_pids(server)
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = sum(_status_bytes(pid, "VmRSS") for pid in pids)
    operation()
    assert _server_pids(server) == pids, "a server process exited or was replaced"
    peak = sum(_status_bytes(pid, "VmHWM") for pid in pids)
    return peak - before


def test_rss_stays_flat_while_512_mib_blobs_stream_through(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    server = start_registry(workers=1)
    # Warm-up: the same three operations on a small blob, so that one-time allocations (first
    # request of each kind, connection setup, lazily built state) are not counted as growth.
    small = Blob(8 * MiB, seed=1)
    push_monolithic(server, small)
    push_chunked(server, Blob(12 * MiB, seed=2))
    pull(server, small, PULL_CLIENTS)

    blob = Blob(BLOB_SIZE, seed=3)
    chunked = Blob(BLOB_SIZE, seed=4)
    growth = {
        "monolithic push": growth_during(server, lambda: push_monolithic(server, blob)),
        "chunked push": growth_during(server, lambda: push_chunked(server, chunked)),
        f"{PULL_CLIENTS} concurrent pulls": growth_during(
            server, lambda: pull(server, blob, PULL_CLIENTS)
        ),
    }
    report = ", ".join(f"{name} {value / MiB:.1f} MiB" for name, value in growth.items())
    print(f"server RSS growth: {report}")
    assert all(value < LIMIT for value in growth.values()), f"RSS grew too much: {report}"
