"""The docker CLI with no engine: `docker manifest inspect` talks to the registry directly."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.clients.helpers import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    OciLayout,
    run,
    sha256,
)
from tests.conftest import require_tool
from tests.server import RegistryProcess

pytestmark = pytest.mark.clients


def docker_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "docker-config"
    config.mkdir(exist_ok=True)
    return {"DOCKER_CONFIG": str(config)}


def test_docker_manifest_inspect(
    registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    docker = require_tool("docker")
    skopeo = require_tool("skopeo")
    layout = OciLayout(tmp_path / "layout")
    amd64 = layout.add_image({"a.txt": b"amd64\n"}, architecture="amd64")
    arm64 = layout.add_image({"a.txt": b"arm64\n"}, architecture="arm64", variant="v8")
    layout.tag(amd64, "single")
    index = layout.add_index([amd64, arm64])
    layout.tag(index, "multi")
    host = registry_server.host
    for ref in ("single", "multi"):
        run(
            [
                skopeo, "copy", "--all", "--dest-tls-verify=false",
                f"oci:{layout.root}:{ref}", f"docker://{host}/docker/inspect:{ref}",
            ],
            server=registry_server,
        )  # fmt: skip
    env = docker_env(tmp_path)

    plain = json.loads(
        run(
            [docker, "manifest", "inspect", "--insecure", f"{host}/docker/inspect:single"],
            env=env,
            server=registry_server,
        ).stdout
    )
    assert (
        plain["config"]["digest"]
        == json.loads((layout.root / "blobs/sha256" / amd64["digest"][7:]).read_bytes())["config"][
            "digest"
        ]
    )

    verbose = json.loads(
        run(
            [docker, "manifest", "inspect", "-v", "--insecure", f"{host}/docker/inspect:single"],
            env=env,
            server=registry_server,
        ).stdout
    )
    assert verbose["Descriptor"]["digest"] == amd64["digest"]
    assert verbose["Descriptor"]["mediaType"] == OCI_MANIFEST
    assert verbose["Descriptor"]["size"] == amd64["size"]

    listing = json.loads(
        run(
            [docker, "manifest", "inspect", "--insecure", f"{host}/docker/inspect:multi"],
            env=env,
            server=registry_server,
        ).stdout
    )
    assert listing["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in listing["manifests"]] == [amd64["digest"], arm64["digest"]]
    assert [m["platform"]["architecture"] for m in listing["manifests"]] == ["amd64", "arm64"]

    served = client.get("/v2/docker/inspect/manifests/multi", headers={"Accept": OCI_INDEX})
    assert served.headers["Docker-Content-Digest"] == index["digest"]


def test_docker_manifest_create_and_push(
    registry_server: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    """`docker manifest push` mounts each image's blobs across repositories and pushes each child
    manifest by digest, then the list by tag."""
    docker = require_tool("docker")
    skopeo = require_tool("skopeo")
    layout = OciLayout(tmp_path / "layout")
    host = registry_server.host
    images = {}
    for arch in ("amd64", "arm64"):
        images[arch] = layout.add_image({"a.txt": arch.encode()}, architecture=arch)
        layout.tag(images[arch], arch)
        run(
            [
                skopeo, "copy", "--dest-tls-verify=false", "--format", "v2s2",
                f"oci:{layout.root}:{arch}", f"docker://{host}/docker/src-{arch}:1",
            ],
            server=registry_server,
        )  # fmt: skip
    env = docker_env(tmp_path)
    target = f"{host}/docker/list:1"
    run(
        [
            docker, "manifest", "create", "--insecure", target,
            f"{host}/docker/src-amd64:1", f"{host}/docker/src-arm64:1",
        ],
        env=env,
        server=registry_server,
    )  # fmt: skip
    run(
        [docker, "manifest", "annotate", "--variant", "v8", target, f"{host}/docker/src-arm64:1"],
        env=env,
    )
    output = run(
        [docker, "manifest", "push", "--insecure", target], env=env, server=registry_server
    ).stdout.splitlines()
    # One "Pushed ref <repo>@<digest>" line per child manifest, then the list's digest.
    pushed = output[-1].strip()
    children_pushed = [line.rsplit(" ", 1)[-1] for line in output if line.startswith("Pushed ref")]

    served = client.get(
        "/v2/docker/list/manifests/1",
        headers={"Accept": f"{DOCKER_MANIFEST_LIST}, {OCI_INDEX}"},
    )
    assert served.status_code == 200, served.text
    assert served.headers["Content-Type"] == DOCKER_MANIFEST_LIST
    assert served.headers["Docker-Content-Digest"] == pushed
    assert sha256(served.content) == pushed
    listing = json.loads(served.content)
    platforms = [
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in listing["manifests"]
    ]
    assert platforms == [("amd64", None), ("arm64", "v8")]
    assert sorted(children_pushed) == sorted(m["digest"] for m in listing["manifests"])
    for child in listing["manifests"]:
        got = client.get(
            f"/v2/docker/list/manifests/{child['digest']}", headers={"Accept": DOCKER_MANIFEST}
        )
        assert got.status_code == 200, got.text
        assert got.headers["Content-Type"] == DOCKER_MANIFEST
        assert sha256(got.content) == child["digest"]
        manifest = json.loads(got.content)
        for blob in [manifest["config"], *manifest["layers"]]:
            head = client.head(f"/v2/docker/list/blobs/{blob['digest']}")
            assert head.status_code == 200, blob
            assert int(head.headers["Content-Length"]) == blob["size"]

    # A client that only reads Docker schema 2 images gets the linux/amd64 one for the tag.
    fallback = client.get("/v2/docker/list/manifests/1", headers={"Accept": DOCKER_MANIFEST})
    assert fallback.status_code == 200, fallback.text
    assert fallback.headers["Content-Type"] == DOCKER_MANIFEST
    assert fallback.headers["Docker-Content-Digest"] == listing["manifests"][0]["digest"]
