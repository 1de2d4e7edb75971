"""Graceful shutdown: SIGTERM lets in-flight requests finish and turns readiness off."""

from __future__ import annotations

import hashlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from aiohttp.test_utils import TestClient, TestServer

from cargobay.api.common import SHUTTING_DOWN_KEY
from cargobay.app import build_registry, create_app
from cargobay.config import load_config
from tests.api.helpers import location_url, with_query
from tests.server import RegistryProcess


def test_sigterm_during_an_upload_lets_it_finish(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    server = start_registry(workers=2)
    first, rest = b"a" * (1 << 20), b"b" * (1 << 20)
    halfway = threading.Event()
    go_on = threading.Event()

    def body() -> Iterator[bytes]:
        yield first
        halfway.set()
        go_on.wait(30)
        yield rest

    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = client.post("/v2/slow/upload/blobs/uploads/").headers["Location"]
        results: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: results.append(client.patch(location_url(location), content=body()))
        )
        sender.start()
        assert halfway.wait(30)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        go_on.set()
        sender.join(60)
        assert results and results[0].status_code == 202, results
        assert server.process.wait(timeout=30) == 0
    # The upload is complete and durable: a new server on the same data finishes it.
    restarted = start_registry(data_dir=server.data_dir)
    with httpx.Client(base_url=restarted.url, timeout=60, follow_redirects=True) as client:
        digest = "sha256:" + hashlib.sha256(first + rest).hexdigest()
        r = client.put(with_query(results[0].headers["Location"], digest=digest))
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/slow/upload/blobs/{digest}").content == first + rest


async def test_readiness_turns_off_when_shutdown_begins(tmp_path: Path) -> None:
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path)})
    registry = build_registry(config)
    registry.metadata.migrate()
    app = create_app(config, registry)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 200
        app[SHUTTING_DOWN_KEY].set()
        r = await client.get("/readyz")
        assert r.status == 503
        assert await r.json() == {"status": "shutting down"}
        assert (await client.get("/healthz")).status == 200


def test_a_stalled_request_body_is_cut_off(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    server = start_registry(workers=1, config={"http": {"body_idle_timeout_seconds": 1}})
    host, port = server.host.rsplit(":", 1)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = client.post("/v2/slow/loris/blobs/uploads/").headers["Location"]
        with socket.create_connection((host, int(port)), timeout=30) as raw:
            raw.sendall(
                f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Length: 1000\r\n\r\n0123456789".encode()
            )  # ... and nothing more
            answer = raw.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "BLOB_UPLOAD_INVALID" in answer and "too slow" in answer
        status = client.get(location_url(location))
        assert status.status_code == 204 and status.headers["Range"] == "0-0"
