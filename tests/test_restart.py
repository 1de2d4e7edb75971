"""Everything a registry stored survives a restart on the same data directory, including an
upload session left half done."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.server import RegistryProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(client: httpx.Client, name: str, data: bytes) -> dict[str, object]:
    """POST then PUT with the whole body (the two-request monolithic upload)."""
    started = client.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202, started.text
    digest = digest_of(data)
    done = client.put(
        started.headers["Location"],
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == digest
    return {"digest": digest, "size": len(data)}


def push_manifest(client: httpx.Client, name: str, reference: str, body: dict[str, object]) -> str:
    content = json.dumps(body).encode()
    response = client.put(
        f"/v2/{name}/manifests/{reference}",
        content=content,
        headers={"Content-Type": str(body["mediaType"])},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest_of(content)
    return digest_of(content)


def test_restart_keeps_content_and_resumes_uploads(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    name = "restart/app"
    config_bytes = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    layers = [bytes(range(256)) * 64, b"second layer\n" * 1000]
    half_done = b"".join(bytes([i % 251]) * 1000 for i in range(300))  # 300 kB
    split = 123_457

    first = start_registry(data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=60) as client:
        config = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **push_blob(client, name, config_bytes),
        }
        layer_descriptors = [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", **push_blob(client, name, b)}
            for b in layers
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layer_descriptors,
            "annotations": {"org.opencontainers.image.title": "restart"},
        }
        manifest_digest = push_manifest(client, name, "v1", manifest)
        manifest_bytes = json.dumps(manifest).encode()
        # A second tag on the same manifest, by digest then tag, and an index over it.
        push_manifest(client, name, "stable", manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
        index_digest = push_manifest(client, name, "multi", index)

        # A chunked upload left half done: POST and one PATCH.
        started = client.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.text
        patched = client.patch(
            started.headers["Location"],
            content=half_done[:split],
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"0-{split - 1}",
            },
        )
        assert patched.status_code == 202, patched.text
        assert patched.headers["Range"] == f"0-{split - 1}"
        upload_location = patched.headers["Location"]
    first.stop()

    second = start_registry(data_dir=data_dir)
    assert second.url != "" and second.process is not None
    with httpx.Client(base_url=second.url, timeout=60) as client:
        for tag, expected_digest, expected_type in (
            ("v1", manifest_digest, OCI_MANIFEST),
            ("stable", manifest_digest, OCI_MANIFEST),
            ("multi", index_digest, OCI_INDEX),
        ):
            response = client.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT})
            assert response.status_code == 200, (tag, response.text, second.log())
            assert response.headers["Docker-Content-Digest"] == expected_digest
            assert response.headers["Content-Type"] == expected_type
            assert digest_of(response.content) == expected_digest
        by_digest = client.get(
            f"/v2/{name}/manifests/{manifest_digest}", headers={"Accept": ACCEPT}
        )
        assert by_digest.content == manifest_bytes

        for data in (config_bytes, *layers):
            blob = client.get(f"/v2/{name}/blobs/{digest_of(data)}")
            assert blob.status_code == 200, blob.text
            assert blob.content == data

        tags = client.get(f"/v2/{name}/tags/list")
        assert tags.status_code == 200, tags.text
        assert tags.json() == {"name": name, "tags": ["multi", "stable", "v1"]}
        catalog = client.get("/v2/_catalog")
        assert name in catalog.json()["repositories"]

        # The half-done upload is still there with the bytes it had, and can be finished.
        status = client.get(upload_location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == f"0-{split - 1}"
        rest = client.patch(
            upload_location,
            content=half_done[split:],
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{split}-{len(half_done) - 1}",
            },
        )
        assert rest.status_code == 202, rest.text
        assert rest.headers["Range"] == f"0-{len(half_done) - 1}"
        done = client.put(rest.headers["Location"], params={"digest": digest_of(half_done)})
        assert done.status_code == 201, (done.text, second.log())
        assert done.headers["Docker-Content-Digest"] == digest_of(half_done)
        blob = client.get(f"/v2/{name}/blobs/{digest_of(half_done)}")
        assert blob.status_code == 200
        assert blob.content == half_done
