"""podman and buildah (rootful, vfs storage under tmp_path) against a live registry."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.clients.helpers import (
    ACCEPT_ALL_MANIFESTS,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    buildah_cmd,
    containers_env,
    podman_cmd,
    run,
    sha256,
    short_runroot,
)
from tests.conftest import require_tool
from tests.server import RegistryProcess

pytestmark = pytest.mark.clients


@pytest.fixture
def runroots() -> Iterator[Callable[[], Path]]:
    """Short runroot directories (podman limits their length), removed after the test."""
    made: list[Path] = []

    def make() -> Path:
        made.append(short_runroot())
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def rootfs_tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return path


def manifest_of(client: httpx.Client, name: str, reference: str) -> httpx.Response:
    response = client.get(
        f"/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT_ALL_MANIFESTS}
    )
    assert response.status_code == 200, response.text
    return response


def test_podman_push_and_pull(
    registry_server: RegistryProcess,
    client: httpx.Client,
    tmp_path: Path,
    runroots: Callable[[], Path],
) -> None:
    require_tool("podman")
    env = containers_env(tmp_path, registry_server.host)
    pusher = podman_cmd(tmp_path / "push", runroots())
    ref = f"{registry_server.host}/podman/imported:1"
    tarball = rootfs_tarball(tmp_path / "rootfs.tar", {"hello.txt": b"hello from podman\n"})

    run([*pusher, "import", tarball, "localhost/imported:1"], env=env)
    digest_file = tmp_path / "pushed-digest"
    run(
        [
            *pusher, "push", "--tls-verify=false", "--digestfile", digest_file,
            "localhost/imported:1", ref,
        ],
        env=env,
        server=registry_server,
    )  # fmt: skip
    pushed = digest_file.read_text().strip()
    served = manifest_of(client, "podman/imported", "1")
    assert served.headers["Docker-Content-Digest"] == pushed
    assert sha256(served.content) == pushed

    # Pull into a separate, empty storage, so nothing can come from a local cache.
    puller = podman_cmd(tmp_path / "pull", runroots())
    run([*puller, "pull", "--tls-verify=false", ref], env=env, server=registry_server)
    inspected = json.loads(run([*puller, "image", "inspect", ref], env=env).stdout)[0]
    assert inspected["Digest"] == pushed
    assert f"{registry_server.host}/podman/imported@{pushed}" in inspected["RepoDigests"]
    assert inspected["Architecture"] and inspected["Os"] == "linux"

    original = json.loads(run([*pusher, "image", "inspect", "localhost/imported:1"]).stdout)[0]
    assert inspected["Id"] == original["Id"]  # the same config blob came back


def test_podman_manifest_push_all(
    registry_server: RegistryProcess,
    client: httpx.Client,
    tmp_path: Path,
    runroots: Callable[[], Path],
) -> None:
    require_tool("podman")
    env = containers_env(tmp_path, registry_server.host)
    podman = podman_cmd(tmp_path / "storage", runroots())
    host = registry_server.host
    tarball = rootfs_tarball(tmp_path / "rootfs.tar", {"arch.txt": b"any arch\n"})
    for arch in ("amd64", "arm64"):
        run([*podman, "import", "--arch", arch, tarball, f"localhost/arch:{arch}"], env=env)

    list_name = "localhost/multi:1"
    run([*podman, "manifest", "create", list_name], env=env)
    for arch in ("amd64", "arm64"):
        run(
            [
                *podman,
                "manifest",
                "add",
                "--arch",
                arch,
                list_name,
                f"containers-storage:localhost/arch:{arch}",
            ],
            env=env,
        )
    digest_file = tmp_path / "list-digest"
    run(
        [
            *podman, "manifest", "push", "--all", "--tls-verify=false",
            "--digestfile", digest_file, list_name, f"docker://{host}/podman/multi:1",
        ],
        env=env,
        server=registry_server,
    )  # fmt: skip
    pushed = digest_file.read_text().strip()

    served = manifest_of(client, "podman/multi", "1")
    assert served.headers["Docker-Content-Digest"] == pushed
    assert sha256(served.content) == pushed
    index = json.loads(served.content)
    assert served.headers["Content-Type"] == index.get("mediaType", OCI_INDEX)
    platforms = sorted(m["platform"]["architecture"] for m in index["manifests"])
    assert platforms == ["amd64", "arm64"]
    for child in index["manifests"]:
        got = manifest_of(client, "podman/multi", child["digest"])
        assert got.headers["Content-Type"] == child["mediaType"]
        assert sha256(got.content) == child["digest"]
        assert len(got.content) == child["size"]

    # The same list as a Docker manifest list, into another repository (blobs are mounted).
    v2s2_digest_file = tmp_path / "v2s2-digest"
    run(
        [
            *podman, "manifest", "push", "--all", "--format", "v2s2", "--tls-verify=false",
            "--digestfile", v2s2_digest_file, list_name, f"docker://{host}/podman/multi-v2s2:1",
        ],
        env=env,
        server=registry_server,
    )  # fmt: skip
    v2s2 = manifest_of(client, "podman/multi-v2s2", "1")
    assert v2s2.headers["Content-Type"] == DOCKER_MANIFEST_LIST
    assert v2s2.headers["Docker-Content-Digest"] == v2s2_digest_file.read_text().strip()
    for child in json.loads(v2s2.content)["manifests"]:
        assert child["mediaType"] == DOCKER_MANIFEST
        got = manifest_of(client, "podman/multi-v2s2", child["digest"])
        assert got.headers["Content-Type"] == DOCKER_MANIFEST
        assert sha256(got.content) == child["digest"]

    # podman reads the list back (this command has no TLS flag: registries.conf says insecure).
    remote = json.loads(
        run(
            [*podman, "manifest", "inspect", f"{host}/podman/multi:1"],
            env=env,
            server=registry_server,
        ).stdout
    )
    assert [m["digest"] for m in remote["manifests"]] == [m["digest"] for m in index["manifests"]]


def test_buildah_from_scratch_push(
    registry_server: RegistryProcess,
    client: httpx.Client,
    tmp_path: Path,
    runroots: Callable[[], Path],
) -> None:
    require_tool("buildah")
    skopeo = require_tool("skopeo")
    env = containers_env(tmp_path, registry_server.host)
    buildah = buildah_cmd(tmp_path / "storage", runroots())
    ref = f"{registry_server.host}/buildah/scratch:1"
    payload = tmp_path / "payload.txt"
    payload.write_bytes(b"built by buildah\n")

    container = run([*buildah, "from", "scratch"], env=env).stdout.strip()
    run([*buildah, "copy", container, payload, "/payload.txt"], env=env)
    run([*buildah, "config", "--cmd", "/payload.txt", container], env=env)
    run([*buildah, "commit", "-q", container, ref], env=env)
    digest_file = tmp_path / "digest"
    run(
        [*buildah, "push", "--tls-verify=false", "--digestfile", digest_file, ref],
        env=env,
        server=registry_server,
    )
    pushed = digest_file.read_text().strip()

    info = json.loads(run([skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"]).stdout)
    assert info["Digest"] == pushed
    assert info["Name"] == f"{registry_server.host}/buildah/scratch"
    assert len(info["Layers"]) == 1
    served = manifest_of(client, "buildah/scratch", "1")
    assert sha256(served.content) == pushed

    # The layer holds the file that was copied in.
    layer = client.get(f"/v2/buildah/scratch/blobs/{info['Layers'][0]}")
    assert layer.status_code == 200
    assert sha256(layer.content) == info["Layers"][0]
    with tarfile.open(fileobj=io.BytesIO(layer.content)) as tar:
        member = tar.extractfile("payload.txt")
        assert member is not None
        assert member.read() == b"built by buildah\n"
