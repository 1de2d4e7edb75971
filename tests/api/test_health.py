"""/healthz and /readyz: unauthenticated, JSON, for load balancers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.server import RegistryProcess


def test_healthz_and_readyz_answer_ok(client: httpx.Client) -> None:
    alive = client.get("/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "metadata": "ok", "storage": "ok"}
    assert ready.headers["Cache-Control"] == "no-store"


def test_health_needs_no_credentials(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    server = start_registry(config={"auth": {"htpasswd": str(htpasswd)}})
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.get("/v2/").status_code == 401
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200


def test_readyz_fails_when_blob_storage_is_gone(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = start_registry(data_dir=data, workers=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        (data / "uploads").rename(tmp_path / "moved")
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert r.json()["metadata"] == "ok"
        assert "not writable" in r.json()["storage"]
        assert client.get("/healthz").status_code == 200
