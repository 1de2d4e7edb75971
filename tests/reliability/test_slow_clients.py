"""Slow and malformed clients: slow-loris headers and bodies are cut off by timeouts, requests
the HTTP parser refuses get a 400 without harming the registry or flooding its log."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.server import RegistryProcess


def _connect(server: RegistryProcess) -> socket.socket:
    host, port = server.host.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def _read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except ConnectionResetError:  # the server may reset after answering a broken request
        pass
    return data


def _trickle(conn: socket.socket, data: bytes, every: float, closed: threading.Event) -> int:
    """Send one byte every `every` seconds until done or the server hangs up; bytes sent."""
    sent = 0
    for byte in data:
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            break
        sent += 1
        if closed.wait(every):
            break
    return sent


def test_slow_loris_headers_are_cut_off_while_others_are_served(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    """Connections that never finish their headers, or never send anything, are closed after
    http.idle_timeout_seconds, however steadily they trickle; others are served meanwhile."""
    server = start_registry(workers=1, config={"http": {"idle_timeout_seconds": 2}})
    silent = [_connect(server) for _ in range(200)]
    trickling = [_connect(server) for _ in range(20)]
    headers = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    done = threading.Event()
    results: list[int] = [0] * len(trickling)

    def trickle(i: int) -> None:
        results[i] = _trickle(trickling[i], headers, 0.05, done)

    threads = [threading.Thread(target=trickle, args=(i,)) for i in range(len(trickling))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    # While they hold their connections, the registry keeps answering everyone else.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(50):
            assert client.get("/v2/").status_code == 200
    for conn in silent:
        assert _read_all(conn) == b""  # closed without a response: no request ever came
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    done.set()
    # Each trickler was cut off well before it could send its 1,000+ header bytes at 20/s.
    assert all(0 < sent < len(headers) for sent in results), results
    assert elapsed < 30, elapsed
    for conn in [*silent, *trickling]:
        conn.close()
    assert "Traceback" not in server.log()


def test_a_trickling_request_body_is_cut_off(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    """A body that keeps sending, but below http.body_min_bytes_per_second, gets 408; the
    upload keeps only whole chunks (here: nothing) and stays usable."""
    server = start_registry(
        workers=1,
        config={"http": {"body_idle_timeout_seconds": 1, "body_min_bytes_per_second": 100}},
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = client.post("/v2/slow/body/blobs/uploads/").headers["Location"]
        conn = _connect(server)
        conn.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        closed = threading.Event()
        sender = threading.Thread(target=_trickle, args=(conn, b"z" * 100000, 0.02, closed))
        sender.start()
        answer = _read_all(conn).decode()
        closed.set()
        sender.join()
        conn.close()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "BLOB_UPLOAD_INVALID" in answer and "too slow" in answer
        status = client.get(location)
        assert status.status_code == 204 and status.headers["Range"] == "0-0"
        # The session still takes a normal upload.
        data = b"after the trickle"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        done = client.put(location, params={"digest": digest}, content=data)
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/slow/body/blobs/{digest}").content == data


def test_a_slow_store_is_not_blamed_on_the_client(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    """A body that arrives at a steady, sufficient rate in many small pieces is accepted even
    when the whole request takes several periods."""
    server = start_registry(
        workers=1,
        config={"http": {"body_idle_timeout_seconds": 1, "body_min_bytes_per_second": 1000}},
    )
    data = bytes(range(256)) * 40  # 10 KiB in 40 pieces over ~4 s: 2,560 bytes per second
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def pieces() -> object:
        for i in range(0, len(data), 256):
            yield data[i : i + 256]
            threading.Event().wait(0.1)

    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = client.post("/v2/steady/blobs/uploads/").headers["Location"]
        put = client.put(location, params={"digest": digest}, content=pieces())  # type: ignore[arg-type]
        assert put.status_code == 201, put.text
        assert client.get(f"/v2/steady/blobs/{digest}").content == data


MALFORMED = {
    "duplicate Content-Length": "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting Content-Length": "Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "Content-Length and Transfer-Encoding": (
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "duplicate Transfer-Encoding": (
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "unknown Transfer-Encoding": "Transfer-Encoding: gzip\r\n\r\nabc",
    "negative Content-Length": "Content-Length: -1\r\n\r\nabc",
    "signed Content-Length": "Content-Length: +3\r\n\r\nabc",
    "huge Content-Length": "Content-Length: 99999999999999999999999999\r\n\r\nabc",
    "bad chunk size": "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk longer than declared": "Transfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
    "oversized header": "X-Big: " + "x" * 70000 + "\r\nContent-Length: 3\r\n\r\nabc",
    "body longer than declared": "Content-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_framing_is_refused_and_harmless(
    start_registry: Callable[..., RegistryProcess], case: str
) -> None:
    server = start_registry(workers=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = client.post("/v2/framing/blobs/uploads/").headers["Location"]
        conn = _connect(server)
        conn.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\n{MALFORMED[case]}".encode())
        answer = _read_all(conn)
        conn.close()
        status_line = answer.split(b"\r\n", 1)[0]
        statuses = [
            int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")
        ]
        assert statuses and all(400 <= s < 500 for s in statuses), answer[:500]
        assert statuses[-1] == 400, status_line
        # Nothing reached the upload but, at most, the declared bytes of a well-framed body.
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] in {"0-0", "0-2"}
        # The registry is fine and said so in one line, without a traceback.
        assert client.get("/v2/").status_code == 200
    log = server.log()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
    # (Garbage where a request line should be is aiohttp's "not HTTP at all": logged at debug.)
    assert "refused a malformed request" in log or case == "body longer than declared"


def test_body_shorter_than_declared_leaves_the_upload_resumable(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    """A client that declares 1,000 bytes, sends 10 and hangs up: the chunk is not stored,
    the session is unchanged and finishes normally."""
    server = start_registry(workers=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = client.post("/v2/short/body/blobs/uploads/").headers["Location"]
        conn = _connect(server)
        conn.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
            + b"0123456789"
        )
        conn.shutdown(socket.SHUT_WR)
        assert _read_all(conn) == b""  # no response to half a request
        conn.close()
        status = client.get(location)
        assert status.status_code == 204 and status.headers["Range"] == "0-0", status.text
        data = b"0123456789" * 100
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert client.patch(location, content=data).status_code == 202
        done = client.put(location, params={"digest": digest})
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/short/body/blobs/{digest}").content == data
    assert "Traceback" not in server.log()
