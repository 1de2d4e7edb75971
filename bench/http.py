"""A minimal blocking HTTP/1.1 client over a raw socket, fast enough to load a registry at GB/s.

One keep-alive connection per `Connection`. Headers and small bodies go out in one `sendall`;
large bodies are sent from a memoryview in 1 MiB slices. Responses are read with `recv_into` a
preallocated 1 MiB buffer; bodies can be discarded without ever being copied (`keep_body=False`).
Content-Length and chunked framing are understood; no pipelining, no TLS. Redirects are followed
only when asked (`follow=True`, for blob GETs and HEADs that an S3-backed registry answers with a
307 to a presigned URL), over one more kept-alive connection per host.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IO_SIZE = 1 << 20
SMALL_BODY = 64 << 10
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5

Body = bytes | bytearray | memoryview


class HTTPError(Exception):
    """An unexpected status code (or a broken response)."""

    def __init__(self, message: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(f"{message}: {status} {body[:300]!r}" if status else message)
        self.status = status
        self.body = body


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes = b""  # empty when the body was discarded
    length: int = 0  # body bytes received (kept or not)
    extra: dict[str, str] = field(default_factory=dict)

    def expect(self, *statuses: int, what: str = "request") -> Response:
        if self.status not in statuses:
            raise HTTPError(f"{what} expected {statuses}", self.status, self.body)
        return self

    def location(self) -> str:
        """The Location header as a path + query (distribution answers absolute URLs)."""
        value = self.headers.get("location")
        if not value:
            raise HTTPError("response has no Location", self.status, self.body)
        if value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return value


def with_query(target: str, **params: str) -> str:
    """Append query parameters (values must already be URL-safe)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{target}{'&' if '?' in target else '?'}{query}"


class Connection:
    """A keep-alive HTTP/1.1 connection to host:port, reconnecting lazily when closed."""

    def __init__(self, host: str, port: int, *, timeout: float = 120.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = bytearray(IO_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0  # buffered, unconsumed bytes are _buf[_start:_end]
        self._end = 0
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self._peers: dict[tuple[str, int], Connection] = {}  # redirect targets, kept alive
        self.redirects = 0  # redirects followed

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._start = self._end = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for peer in self._peers.values():
            peer.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
        *,
        keep_body: bool = True,
        follow: bool = False,
    ) -> Response:
        """One request; with `follow`, redirects are followed (same method, no headers or body:
        for GET and HEAD) and the final response is returned."""
        response = self._request(method, target, headers, body, keep_body)
        hops = 0
        while follow and response.status in REDIRECTS:
            if body is not None:
                raise HTTPError("redirects are followed for requests without a body only")
            if hops == MAX_REDIRECTS:
                raise HTTPError("too many redirects", response.status, response.body)
            hops += 1
            self.redirects += 1
            conn, target = self._redirect_target(response)
            method = "GET" if response.status == 303 else method
            response = conn._request(method, target, None, None, keep_body)
        return response

    def _request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None,
        body: Body | None,
        keep_body: bool,
    ) -> Response:
        if self.sock is None:
            self.connect()
        try:
            self._send(method, target, headers, body)
            return self._receive(method, keep_body)
        except (OSError, HTTPError):
            self.close()
            raise

    def _redirect_target(self, response: Response) -> tuple[Connection, str]:
        """The connection (this one, or a kept-alive one to another host) and request target
        that a redirect points to."""
        location = response.headers.get("location")
        if not location:
            raise HTTPError("redirect without Location", response.status, response.body)
        parts = urlsplit(location)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not parts.netloc:
            return self, target
        if parts.scheme != "http" or parts.hostname is None:
            raise HTTPError(f"cannot follow a redirect to {location[:200]}")
        host, port = parts.hostname, parts.port or 80
        if (host, port) == (self.host, self.port):
            return self, target
        peer = self._peers.get((host, port))
        if peer is None:
            peer = self._peers[host, port] = Connection(host, port, timeout=self.timeout)
        return peer, target

    def _send(
        self, method: str, target: str, headers: dict[str, str] | None, body: Body | None
    ) -> None:
        assert self.sock is not None
        size = 0 if body is None else len(body)
        lines = [f"{method} {target} HTTP/1.1\r\n".encode(), self._host_header]
        if body is not None or method in ("PUT", "POST", "PATCH"):
            lines.append(f"Content-Length: {size}\r\n".encode())
        if headers:
            lines.extend(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        lines.append(b"\r\n")
        head = b"".join(lines)
        if body is None or size == 0:
            self.sock.sendall(head)
        elif size <= SMALL_BODY:
            self.sock.sendall(head + bytes(body))
        else:
            self.sock.sendall(head)
            view = memoryview(body).cast("B")
            for offset in range(0, size, IO_SIZE):
                self.sock.sendall(view[offset : offset + IO_SIZE])

    def _receive(self, method: str, keep_body: bool) -> Response:
        status, headers = self._read_head()
        while 100 <= status < 200:  # interim responses carry no body
            status, headers = self._read_head()
        response = Response(status, headers)
        if method == "HEAD" or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower().endswith("chunked"):
            self._read_chunked(response, keep_body)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            response.body = self._read_exact(length, keep_body)
            response.length = length
        else:  # delimited by close
            response.body = self._read_to_close(response, keep_body)
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return response

    # -- buffered reading ----------------------------------------------------------------------

    def _fill(self) -> None:
        assert self.sock is not None
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):
            if self._start == 0:
                raise HTTPError("response header or chunk line larger than 1 MiB")
            pending = self._end - self._start
            self._buf[:pending] = self._buf[self._start : self._end]
            self._start, self._end = 0, pending
        n = self.sock.recv_into(self._view[self._end :])
        if n == 0:
            raise ConnectionError("connection closed by server")
        self._end += n

    def _read_line(self) -> bytes:
        while True:
            index = self._buf.find(b"\r\n", self._start, self._end)
            if index >= 0:
                line = bytes(self._buf[self._start : index])
                self._start = index + 2
                return line
            self._fill()

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while True:
            index = self._buf.find(b"\r\n\r\n", self._start, self._end)
            if index >= 0:
                break
            self._fill()
        block = bytes(self._buf[self._start : index]).decode("latin-1")
        self._start = index + 4
        status_line, *lines = block.split("\r\n")
        if not status_line.startswith("HTTP/1."):
            raise HTTPError(f"bad status line {status_line[:100]!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line[9:12]), headers

    def _read_exact(self, length: int, keep: bool) -> bytes:
        """Consume `length` body bytes; return them if `keep`, else discard them uncopied."""
        buffered = min(length, self._end - self._start)
        parts: list[bytes] = []
        if buffered:
            if keep:
                parts.append(bytes(self._buf[self._start : self._start + buffered]))
            self._start += buffered
        remaining = length - buffered
        if remaining:
            assert self.sock is not None
            self._start = self._end = 0
            sock, view = self.sock, self._view
            recv_into = sock.recv_into
            while remaining:
                n = recv_into(view, min(remaining, IO_SIZE))
                if n == 0:
                    raise ConnectionError("connection closed inside a response body")
                if keep:
                    parts.append(bytes(view[:n]))
                remaining -= n
        return b"".join(parts) if keep else b""

    def _read_chunked(self, response: Response, keep: bool) -> None:
        parts: list[bytes] = []
        while True:
            size = int(self._read_line().split(b";", 1)[0], 16)
            if size == 0:
                while self._read_line():  # trailers, then the empty line
                    pass
                break
            part = self._read_exact(size, keep)
            if keep:
                parts.append(part)
            response.length += size
            if self._read_line():
                raise HTTPError("malformed chunked body")
        response.body = b"".join(parts)

    def _read_to_close(self, response: Response, keep: bool) -> bytes:
        parts: list[bytes] = []
        while True:
            pending = self._end - self._start
            if pending:
                if keep:
                    parts.append(bytes(self._buf[self._start : self._end]))
                response.length += pending
                self._start = self._end
            try:
                self._fill()
            except ConnectionError:
                break
        return b"".join(parts)
