"""docker login + docker manifest inspect and oras with basic authentication, over plain HTTP
on loopback and over verified TLS."""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import oras.client as oras_client
import pytest

from cargobay.auth.htpasswd import hash_password
from tests.api.helpers import push_image
from tests.clients.helpers import run, run_status, umoci_image
from tests.conftest import require_tool
from tests.server import RegistryProcess
from tests.tls import make_certificates

pytestmark = pytest.mark.clients

PASSWORD = "s3cret-for-ci"


@pytest.fixture
def with_users(tmp_path: Path, start_registry: Callable[..., RegistryProcess]) -> RegistryProcess:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{hash_password(PASSWORD, rounds=4)}\n")
    return start_registry(config={"auth": {"htpasswd": str(htpasswd)}})


def test_docker_login_then_manifest_inspect(with_users: RegistryProcess, tmp_path: Path) -> None:
    docker = require_tool("docker")
    skopeo = require_tool("skopeo")
    require_tool("umoci")
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    host = with_users.host
    layout = umoci_image(tmp_path / "image", "v1", {"a.txt": b"docker login\n"})
    run(
        [skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", f"ci:{PASSWORD}",
         f"oci:{layout}:v1", f"docker://{host}/docker/login:v1"],
        server=with_users,
    )  # fmt: skip

    wrong = run_status([docker, "login", "-u", "ci", "-p", "wrong", host], env=env)
    assert wrong.returncode != 0
    run([docker, "login", "-u", "ci", "--password-stdin", host], env=env, input=PASSWORD)
    inspected = run(
        [docker, "manifest", "inspect", "--insecure", f"{host}/docker/login:v1"], env=env
    )
    assert json.loads(inspected.stdout)["schemaVersion"] == 2
    run([docker, "logout", host], env=env)
    refused = run_status(
        [docker, "manifest", "inspect", "--insecure", f"{host}/docker/login:v1"], env=env
    )
    assert refused.returncode != 0


def test_oras_with_basic_auth(
    with_users: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # oras only pushes files under the working directory
    (tmp_path / "note.txt").write_text("pushed with a password\n")
    client = oras_client.OrasClient(hostname=with_users.host, insecure=True, auth_backend="basic")
    client.login(username="ci", password=PASSWORD, hostname=with_users.host, tls_verify=False)
    target = f"{with_users.host}/oras/secured:v1"
    response = client.push(target=target, files=["note.txt:text/plain"])
    assert response.status_code == 201, response.text
    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert (tmp_path / "out" / "note.txt").read_text() == "pushed with a password\n"
    assert [Path(f).name for f in files] == ["note.txt"]

    # (oras retries a refused request with back-off for minutes: check anonymity over HTTP.)
    anonymous = httpx.get(f"{with_users.url}/v2/oras/secured/manifests/v1")
    assert anonymous.status_code == 401


@pytest.fixture
def tls_with_users(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> tuple[RegistryProcess, Path]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{hash_password(PASSWORD, rounds=4)}\n")
    certificates = make_certificates(tmp_path / "tls")
    server = start_registry(
        config={
            "auth": {"htpasswd": str(htpasswd)},
            "tls": {"certificate": str(certificates.certificate), "key": str(certificates.key)},
        }
    )
    return server, certificates.ca


def test_oras_with_basic_auth_over_tls(
    tls_with_users: tuple[RegistryProcess, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, ca = tls_with_users
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))  # oras uses requests: trust the test CA
    (tmp_path / "note.txt").write_text("pushed over TLS\n")
    client = oras_client.OrasClient(hostname=server.host, auth_backend="basic")
    client.login(username="ci", password=PASSWORD, hostname=server.host)
    target = f"{server.host}/oras/tls:v1"
    response = client.push(target=target, files=["note.txt:text/plain"])
    assert response.status_code == 201, response.text
    client.pull(target=target, outdir=str(tmp_path / "out"))
    assert (tmp_path / "out" / "note.txt").read_text() == "pushed over TLS\n"


def test_docker_login_over_tls(
    tls_with_users: tuple[RegistryProcess, Path], tmp_path: Path
) -> None:
    docker = require_tool("docker")
    server, ca = tls_with_users
    # The docker CLI trusts a registry's CA from /etc/docker/certs.d/<host:port>/ca.crt.
    certs = Path("/etc/docker/certs.d") / server.host
    certs.mkdir(parents=True)
    try:
        shutil.copy(ca, certs / "ca.crt")
        env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
        run([docker, "login", "-u", "ci", "--password-stdin", server.host], env=env, input=PASSWORD)
        config = json.loads((tmp_path / "docker" / "config.json").read_text())
        assert server.host in config["auths"]
        trust = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(base_url=server.url, auth=("ci", PASSWORD), verify=trust) as client:
            _, digest = push_image(client, "docker/tls", "v1")
        inspected = run(
            [docker, "manifest", "inspect", "-v", f"{server.host}/docker/tls:v1"], env=env
        )
        assert json.loads(inspected.stdout)["Descriptor"]["digest"] == digest
    finally:
        shutil.rmtree(certs, ignore_errors=True)
