"""skopeo (and umoci) against a live registry: copies both ways, formats, indexes, deletes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.clients.helpers import (
    ACCEPT_ALL_MANIFESTS,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    OciLayout,
    layout_blob,
    layout_ref,
    run,
    run_status,
    sha256,
    umoci_image,
)
from tests.conftest import require_tool
from tests.server import RegistryProcess

pytestmark = pytest.mark.clients

FILES = {"hello.txt": b"hello from cargobay\n", "etc/motd": b"tiny image\n"}


@pytest.fixture
def skopeo() -> str:
    return require_tool("skopeo")


@pytest.fixture
def oci_layout(tmp_path: Path) -> Path:
    """A small OCI layout made by umoci, reference `v1`."""
    require_tool("umoci")
    return umoci_image(tmp_path / "umoci", "v1", FILES)


def raw_manifest(skopeo: str, ref: str, server: RegistryProcess) -> bytes:
    out = run([skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], server=server)
    return out.stdout.encode()


def push(skopeo: str, source: str, dest: str, server: RegistryProcess, *extra: str) -> None:
    run(
        [skopeo, "copy", "--dest-tls-verify=false", *extra, source, f"docker://{dest}"],
        server=server,
    )


def pull(skopeo: str, source: str, dest: str, server: RegistryProcess, *extra: str) -> None:
    run(
        [skopeo, "copy", "--src-tls-verify=false", *extra, f"docker://{source}", dest],
        server=server,
    )


def get_manifest(client: httpx.Client, name: str, reference: str) -> httpx.Response:
    return client.get(f"/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT_ALL_MANIFESTS})


def test_copy_oci_image_round_trip(
    skopeo: str,
    oci_layout: Path,
    registry_server: RegistryProcess,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    ref = f"{registry_server.host}/skopeo/oci:v1"
    local = layout_ref(oci_layout, "v1")
    local_bytes = layout_blob(oci_layout, local["digest"])

    push(skopeo, f"oci:{oci_layout}:v1", ref, registry_server)

    # The registry serves exactly the bytes umoci wrote (umoci omits the top-level mediaType,
    # so the type comes from the Content-Type of the PUT).
    assert raw_manifest(skopeo, ref, registry_server) == local_bytes
    response = get_manifest(client, "skopeo/oci", "v1")
    assert response.status_code == 200, response.text
    assert response.content == local_bytes
    assert response.headers["Docker-Content-Digest"] == local["digest"]
    assert response.headers["Content-Type"] == OCI_MANIFEST
    by_digest = get_manifest(client, "skopeo/oci", local["digest"])
    assert by_digest.content == local_bytes

    # Every blob is served byte for byte.
    manifest = json.loads(local_bytes)
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = client.get(f"/v2/skopeo/oci/blobs/{descriptor['digest']}")
        assert blob.status_code == 200, blob.text
        assert blob.content == layout_blob(oci_layout, descriptor["digest"])

    # And back into a fresh layout: same manifest digest, same blobs.
    back = tmp_path / "back"
    pull(skopeo, ref, f"oci:{back}:v1", registry_server)
    returned = layout_ref(back, "v1")
    assert returned["digest"] == local["digest"]
    assert layout_blob(back, returned["digest"]) == local_bytes
    for descriptor in [manifest["config"], *manifest["layers"]]:
        assert layout_blob(back, descriptor["digest"]) == layout_blob(
            oci_layout, descriptor["digest"]
        )


def test_copy_docker_schema2(
    skopeo: str,
    oci_layout: Path,
    registry_server: RegistryProcess,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    ref = f"{registry_server.host}/skopeo/v2s2:v1"
    push(skopeo, f"oci:{oci_layout}:v1", ref, registry_server, "--format", "v2s2")

    raw = raw_manifest(skopeo, ref, registry_server)
    manifest = json.loads(raw)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert {layer["mediaType"] for layer in manifest["layers"]} == {DOCKER_LAYER_GZIP}

    response = get_manifest(client, "skopeo/v2s2", "v1")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == DOCKER_MANIFEST
    assert response.headers["Docker-Content-Digest"] == sha256(raw)
    assert response.content == raw
    head = client.head(
        "/v2/skopeo/v2s2/manifests/v1", headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"}
    )
    assert head.status_code == 200
    assert head.headers["Content-Type"] == DOCKER_MANIFEST
    assert head.headers["Docker-Content-Digest"] == sha256(raw)
    assert int(head.headers["Content-Length"]) == len(raw)

    # Back as a `dir:` copy, which keeps the manifest bytes as they are.
    back = tmp_path / "back"
    pull(skopeo, ref, f"dir:{back}", registry_server)
    assert (back / "manifest.json").read_bytes() == raw
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = (back / descriptor["digest"].removeprefix("sha256:")).read_bytes()
        assert sha256(blob) == descriptor["digest"]
        assert len(blob) == descriptor["size"]


def write_multi_arch_layout(root: Path) -> tuple[OciLayout, dict[str, object]]:
    layout = OciLayout(root)
    amd64 = layout.add_image({"arch.txt": b"amd64\n"}, architecture="amd64")
    arm64 = layout.add_image({"arch.txt": b"arm64\n"}, architecture="arm64", variant="v8")
    index = layout.add_index([amd64, arm64])
    layout.tag(index, "1")
    return layout, {"index": index, "amd64": amd64, "arm64": arm64}


def test_copy_all_multi_arch_index(
    skopeo: str, registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    layout, descriptors = write_multi_arch_layout(tmp_path / "multi")
    index = descriptors["index"]
    assert isinstance(index, dict)
    ref = f"{registry_server.host}/skopeo/multi:1"

    push(skopeo, f"oci:{layout.root}:1", ref, registry_server, "--all")

    raw = raw_manifest(skopeo, ref, registry_server)
    assert raw == layout_blob(layout.root, index["digest"])
    response = get_manifest(client, "skopeo/multi", "1")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.headers["Docker-Content-Digest"] == index["digest"]
    for arch in ("amd64", "arm64"):
        child = descriptors[arch]
        assert isinstance(child, dict)
        got = get_manifest(client, "skopeo/multi", child["digest"])
        assert got.status_code == 200, got.text
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.content == layout_blob(layout.root, child["digest"])

    back = tmp_path / "back"
    pull(skopeo, ref, f"oci:{back}:1", registry_server, "--all")
    returned = layout_ref(back, "1")
    assert returned["digest"] == index["digest"]
    assert layout_blob(back, index["digest"]) == raw
    for arch in ("amd64", "arm64"):
        child = descriptors[arch]
        assert isinstance(child, dict)
        child_bytes = layout_blob(back, child["digest"])
        assert child_bytes == layout_blob(layout.root, child["digest"])
        child_manifest = json.loads(child_bytes)
        for blob in [child_manifest["config"], *child_manifest["layers"]]:
            assert layout_blob(back, blob["digest"]) == layout_blob(layout.root, blob["digest"])


def test_list_tags(skopeo: str, oci_layout: Path, registry_server: RegistryProcess) -> None:
    repo = f"{registry_server.host}/skopeo/tags"
    for tag in ("v1", "latest", "1.0.0"):
        push(skopeo, f"oci:{oci_layout}:v1", f"{repo}:{tag}", registry_server)
    out = run(
        [skopeo, "list-tags", "--tls-verify=false", f"docker://{repo}"], server=registry_server
    )
    listing = json.loads(out.stdout)
    assert listing["Repository"] == repo
    assert sorted(listing["Tags"]) == ["1.0.0", "latest", "v1"]


def test_inspect_and_config(
    skopeo: str, oci_layout: Path, registry_server: RegistryProcess
) -> None:
    ref = f"{registry_server.host}/skopeo/inspect:v1"
    push(skopeo, f"oci:{oci_layout}:v1", ref, registry_server)
    local = layout_ref(oci_layout, "v1")
    manifest = json.loads(layout_blob(oci_layout, local["digest"]))

    info = json.loads(
        run(
            [skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"], server=registry_server
        ).stdout
    )
    assert info["Name"] == f"{registry_server.host}/skopeo/inspect"
    assert info["Digest"] == local["digest"]
    assert info["RepoTags"] == ["v1"]
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert info["Os"] == "linux"

    config_text = run(
        [skopeo, "inspect", "--tls-verify=false", "--config", "--raw", f"docker://{ref}"],
        server=registry_server,
    ).stdout
    assert config_text.encode() == layout_blob(oci_layout, manifest["config"]["digest"])
    config = json.loads(
        run(
            [skopeo, "inspect", "--tls-verify=false", "--config", f"docker://{ref}"],
            server=registry_server,
        ).stdout
    )
    assert config["config"]["Cmd"] == ["/etc/motd"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])


def test_delete_by_digest(
    skopeo: str, oci_layout: Path, registry_server: RegistryProcess, client: httpx.Client
) -> None:
    ref = f"{registry_server.host}/skopeo/delete:v1"
    push(skopeo, f"oci:{oci_layout}:v1", ref, registry_server)
    digest = layout_ref(oci_layout, "v1")["digest"]
    assert get_manifest(client, "skopeo/delete", "v1").status_code == 200

    run([skopeo, "delete", "--tls-verify=false", f"docker://{ref}"], server=registry_server)

    gone = get_manifest(client, "skopeo/delete", "v1")
    assert gone.status_code == 404, gone.text
    assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert get_manifest(client, "skopeo/delete", digest).status_code == 404
    tags = client.get("/v2/skopeo/delete/tags/list")
    assert tags.status_code in (200, 404)
    if tags.status_code == 200:
        assert "v1" not in (tags.json()["tags"] or [])
    failed = run_status(
        [skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
    )
    assert failed.returncode != 0
    assert "manifest unknown" in failed.stderr.lower(), failed.stderr


def test_copy_between_repositories_mounts_blobs(
    skopeo: str, oci_layout: Path, registry_server: RegistryProcess, client: httpx.Client
) -> None:
    source = f"{registry_server.host}/skopeo/mount-src:v1"
    dest = f"{registry_server.host}/skopeo/mount-dst:v1"
    push(skopeo, f"oci:{oci_layout}:v1", source, registry_server)
    local = layout_ref(oci_layout, "v1")
    manifest = json.loads(layout_blob(oci_layout, local["digest"]))
    layer = manifest["layers"][0]["digest"]
    assert client.head(f"/v2/skopeo/mount-dst/blobs/{layer}").status_code == 404

    copied = run(
        [
            skopeo, "--debug", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{source}", f"docker://{dest}",
        ],
        server=registry_server,
    )  # fmt: skip

    # skopeo asked to mount the layer from the source repository, and the registry accepted.
    mount_requests = [
        line for line in copied.stderr.splitlines() if "POST" in line and "mount=" in line
    ]
    assert mount_requests, copied.stderr
    assert "from=skopeo%2Fmount-src" in mount_requests[0]
    assert "mount OK" in copied.stderr, copied.stderr
    assert raw_manifest(skopeo, dest, registry_server) == layout_blob(oci_layout, local["digest"])
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = client.get(f"/v2/skopeo/mount-dst/blobs/{descriptor['digest']}")
        assert blob.status_code == 200, blob.text
        assert blob.content == layout_blob(oci_layout, descriptor["digest"])
