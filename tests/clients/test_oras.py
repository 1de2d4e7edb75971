"""The oras Python SDK against a live registry: artifacts, subjects and the referrers API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.helpers import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, OciLayout, sha256
from tests.server import RegistryProcess

pytestmark = pytest.mark.clients

oras_client = pytest.importorskip("oras.client")
oras_oci = pytest.importorskip("oras.oci")

ROCKET_CONFIG = "application/vnd.acme.rocket.config.v1+json"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"


@pytest.fixture
def oras(registry_server: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # oras only pushes files under the working directory.
    monkeypatch.chdir(tmp_path)
    return oras_client.OrasClient(hostname=registry_server.host, insecure=True)


def check_pushed(response: Any) -> str:
    assert response.status_code == 201, response.text
    return str(response.headers["Docker-Content-Digest"])


def test_push_and_pull_file_artifact(
    oras: Any, registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    content = b"an artifact, not an image\n" * 100
    (tmp_path / "artifact.txt").write_bytes(content)
    (tmp_path / "config.json").write_text('{"rocket": "blue"}')
    target = f"{registry_server.host}/oras/file:v1"

    digest = check_pushed(
        oras.push(
            target=target,
            files=["artifact.txt:text/plain"],
            manifest_config=f"config.json:{ROCKET_CONFIG}",
        )
    )

    served = client.get("/v2/oras/file/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert served.status_code == 200, served.text
    assert served.headers["Docker-Content-Digest"] == digest == sha256(served.content)
    manifest = json.loads(served.content)
    assert manifest["config"]["mediaType"] == ROCKET_CONFIG
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "text/plain"
    assert layer["digest"] == sha256(content)
    assert layer["annotations"]["org.opencontainers.image.title"] == "artifact.txt"

    files = oras.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(f).name for f in files] == ["artifact.txt"]
    assert (tmp_path / "out" / "artifact.txt").read_bytes() == content


def push_subject_image(oras: Any, tmp_path: Path, target: str) -> dict[str, Any]:
    """Push a small image (config, layer, manifest) with the oras SDK; returns its descriptor."""
    layout = OciLayout(tmp_path / "subject")
    image = layout.add_image({"app.txt": b"the subject image\n"})
    manifest = json.loads((layout.root / "blobs/sha256" / image["digest"][7:]).read_bytes())
    for blob in [manifest["config"], *manifest["layers"]]:
        path = layout.root / "blobs/sha256" / blob["digest"][7:]
        response = oras.upload_blob(str(path), target, blob)
        assert response.status_code in (200, 201), response.text
    digest = check_pushed(oras.upload_manifest(manifest, oras.get_container(target)))
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": image["size"]}


def push_referrer(
    oras: Any,
    tmp_path: Path,
    target: str,
    subject: dict[str, Any],
    artifact_type: str,
    payload: bytes,
    annotations: dict[str, str],
) -> str:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"{}")
    config = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
    assert oras.upload_blob(str(empty), target, config).status_code in (200, 201)

    blob_file = tmp_path / f"{artifact_type.rsplit('.', 2)[-2]}.bin"
    blob_file.write_bytes(payload)
    layer = oras_oci.NewLayer(blob_file.name, media_type="application/octet-stream")
    assert oras.upload_blob(blob_file.name, target, layer).status_code in (200, 201)

    manifest = oras_oci.NewManifest()
    manifest["artifactType"] = artifact_type
    manifest["config"] = config
    manifest["layers"] = [layer]
    manifest["subject"] = subject
    manifest["annotations"] = annotations
    response = oras.upload_manifest(manifest, oras.get_container(target))
    digest = check_pushed(response)
    # A registry that supports the referrers API says so when a manifest with a subject is pushed.
    assert response.headers.get("OCI-Subject") == subject["digest"]
    return digest


def test_artifact_with_subject_is_listed_as_referrer(
    oras: Any, registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    host = registry_server.host
    subject = push_subject_image(oras, tmp_path, f"{host}/oras/referred:image")
    sbom_annotations = {
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "com.example.kind": "sbom",
    }
    sbom = push_referrer(
        oras,
        tmp_path,
        f"{host}/oras/referred:sbom",
        subject,
        SBOM_TYPE,
        b'{"packages": []}',
        sbom_annotations,
    )
    signature = push_referrer(
        oras,
        tmp_path,
        f"{host}/oras/referred:signature",
        subject,
        SIGNATURE_TYPE,
        b"signed",
        {"com.example.kind": "signature"},
    )

    listing = client.get(f"/v2/oras/referred/referrers/{subject['digest']}")
    assert listing.status_code == 200, listing.text
    assert listing.headers["Content-Type"] == OCI_INDEX
    index = listing.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {sbom, signature}
    assert by_digest[sbom]["artifactType"] == SBOM_TYPE
    assert by_digest[sbom]["annotations"] == sbom_annotations
    assert by_digest[sbom]["mediaType"] == OCI_MANIFEST
    assert by_digest[signature]["artifactType"] == SIGNATURE_TYPE
    assert by_digest[signature]["annotations"] == {"com.example.kind": "signature"}
    for digest, descriptor in by_digest.items():
        manifest = client.get(f"/v2/oras/referred/manifests/{digest}")
        assert manifest.status_code == 200
        assert descriptor["size"] == len(manifest.content)

    filtered = client.get(
        f"/v2/oras/referred/referrers/{subject['digest']}", params={"artifactType": SBOM_TYPE}
    )
    assert filtered.status_code == 200, filtered.text
    assert filtered.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [sbom]

    none = client.get(
        f"/v2/oras/referred/referrers/{subject['digest']}",
        params={"artifactType": "application/vnd.example.unknown"},
    )
    assert none.status_code == 200
    assert none.json()["manifests"] == []


def test_get_tags_and_delete_tags(
    oras: Any, registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    repo = f"{registry_server.host}/oras/tags"
    for tag in ("alpha", "beta", "gamma"):
        # Different content per tag: oras deletes a tag by deleting its manifest's digest.
        (tmp_path / f"{tag}.txt").write_text(f"{tag}\n")
        check_pushed(oras.push(target=f"{repo}:{tag}", files=[f"{tag}.txt:text/plain"]))

    assert sorted(oras.get_tags(repo)) == ["alpha", "beta", "gamma"]

    assert oras.delete_tags(repo, ["beta"]) == ["beta"]
    assert sorted(oras.get_tags(repo)) == ["alpha", "gamma"]
    gone = client.get("/v2/oras/tags/manifests/beta", headers={"Accept": OCI_MANIFEST})
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # Deleting a tag that does not exist is reported as not deleted.
    assert oras.delete_tags(repo, "beta") == []


def test_chunked_push(
    oras: Any, registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    # 10 PATCHes of 4 KiB and a short last one, each with `Content-Range: start-end`.
    content = bytes(range(256)) * 170
    (tmp_path / "big.bin").write_bytes(content)
    target = f"{registry_server.host}/oras/chunked:v1"
    check_pushed(
        oras.push(
            target=target,
            files=["big.bin:application/octet-stream"],
            do_chunked=True,
            chunk_size=4096,
        )
    )
    blob = client.get(f"/v2/oras/chunked/blobs/{sha256(content)}")
    assert blob.status_code == 200, blob.text
    assert blob.content == content
    oras.pull(target=target, outdir=str(tmp_path / "out"))
    assert (tmp_path / "out" / "big.bin").read_bytes() == content
