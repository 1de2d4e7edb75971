"""registry.read_only: maintenance mode. Writes get 405 UNSUPPORTED, reads keep working."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.helpers import OCI_MANIFEST, assert_error, push_image
from tests.server import RegistryProcess


def test_read_only_mode_refuses_writes_and_serves_reads(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    writable = start_registry(data_dir=data)
    with httpx.Client(base_url=writable.url, timeout=60) as client:
        manifest, digest = push_image(client, "maint/app", "v1")
        config_digest = client.get(
            "/v2/maint/app/manifests/v1", headers={"Accept": OCI_MANIFEST}
        ).json()["config"]["digest"]
    writable.stop()

    server = start_registry(data_dir=data, env={"CARGOBAY_REGISTRY__READ_ONLY": "true"})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        got = client.get("/v2/maint/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.content == manifest
        assert client.get(f"/v2/maint/app/blobs/{config_digest}").status_code == 200
        assert client.get("/v2/maint/app/tags/list").json()["tags"] == ["v1"]
        assert client.get("/v2/_catalog").json()["repositories"] == ["maint/app"]
        writes = [
            client.post("/v2/maint/app/blobs/uploads/"),
            client.put("/v2/maint/app/manifests/v2", content=manifest,
                       headers={"Content-Type": OCI_MANIFEST}),
            client.patch("/v2/maint/app/blobs/uploads/anything", content=b"x"),
            client.delete(f"/v2/maint/app/manifests/{digest}"),
            client.delete(f"/v2/maint/app/blobs/{config_digest}"),
        ]  # fmt: skip
        for r in writes:
            assert_error(r, 405, "UNSUPPORTED")
            assert "read-only" in r.json()["errors"][0]["message"]
        assert client.get(f"/v2/maint/app/manifests/{digest}").status_code == 200
