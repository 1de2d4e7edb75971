"""A webhook receiver for tests: an HTTP server on a loopback port in a thread that records
every POST, answers with a status the test sets, and can go down and come back on its port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["events"]
        return events


class Receiver:
    def __init__(self) -> None:
        self.port = 0
        self.status = 200
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/events") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: connections to the port are refused until start() again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self, path: str = "/events") -> list[dict[str, Any]]:
        """The events of every delivery to `path` that was answered 2xx, in arrival order."""
        with self._lock:
            deliveries = list(self.deliveries)
        return [
            event
            for d in deliveries
            if d.path == path and 200 <= d.status < 300
            for event in d.events
        ]

    def failed(self, path: str = "/events") -> int:
        with self._lock:
            return sum(1 for d in self.deliveries if d.path == path and d.status >= 300)

    def wait_for(
        self, count: int, path: str = "/events", timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The accepted events, once there are at least `count`."""
        wait_until(lambda: len(self.accepted(path)) >= count, timeout)
        return self.accepted(path)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
