"""examples/htpasswd-tls.yml and examples/token-tls.yml work as documented: copied next to a
certificate, a key (and a token signing key) and an htpasswd file made with `cargobay user add`,
real clients log in and push/pull over verified TLS; anonymous clients may pull public/* only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.clients.helpers import podman_cmd, run, run_status, short_runroot, umoci_image
from tests.conftest import require_tool
from tests.server import RegistryProcess
from tests.tls import make_certificates, write_signing_key

pytestmark = pytest.mark.clients

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "correct horse battery staple"


@dataclass
class SecureRegistry:
    server: RegistryProcess
    cert_dir: Path  # holds ca.crt, as containers/image and docker expect

    @property
    def host(self) -> str:
        return self.server.host


@pytest.fixture(params=["htpasswd-tls.yml", "token-tls.yml"])
def secure(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    start_registry: Callable[..., RegistryProcess],
) -> SecureRegistry:
    folder = tmp_path / "registry"
    folder.mkdir()
    config = folder / request.param
    shutil.copy(EXAMPLES / request.param, config)
    write_signing_key(folder / "token-signing.pem")  # read by token-tls.yml only
    certificates = make_certificates(tmp_path / "tls")
    shutil.copy(certificates.certificate, folder / "registry.crt")
    shutil.copy(certificates.key, folder / "registry.key")
    subprocess.run(
        [sys.executable, "-m", "cargobay", "user", "add", "ci", "--config", str(config)],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        timeout=60,
    )
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    shutil.copy(certificates.ca, cert_dir / "ca.crt")
    server = start_registry(config_file=config)
    assert server.url.startswith("https://")
    return SecureRegistry(server, cert_dir)


def test_skopeo_push_with_creds_and_anonymous_pull_of_public(
    secure: SecureRegistry, tmp_path: Path
) -> None:
    skopeo = require_tool("skopeo")
    require_tool("umoci")
    layout = umoci_image(tmp_path / "image", "v1", {"hello.txt": b"public hello\n"})
    creds = ["--dest-cert-dir", secure.cert_dir, "--dest-creds", f"ci:{PASSWORD}"]
    for repository in ("public/hello", "private/hello"):
        target = f"docker://{secure.host}/{repository}:v1"
        run([skopeo, "copy", *creds, f"oci:{layout}:v1", target], server=secure.server)

    anonymous = [skopeo, "inspect", "--no-creds", "--cert-dir", secure.cert_dir, "--raw"]
    public = run([*anonymous, f"docker://{secure.host}/public/hello:v1"], server=secure.server)
    assert json.loads(public.stdout)["schemaVersion"] == 2
    private = run_status([*anonymous, f"docker://{secure.host}/private/hello:v1"])
    assert private.returncode != 0
    pushed = run_status(
        [skopeo, "copy", "--dest-no-creds", "--dest-cert-dir", secure.cert_dir, f"oci:{layout}:v1",
         f"docker://{secure.host}/public/anonymous:v1"]
    )  # fmt: skip
    assert pushed.returncode != 0


def test_podman_login_push_pull(secure: SecureRegistry, tmp_path: Path) -> None:
    require_tool("podman")
    runroot = short_runroot()
    try:
        env = {"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
        (tmp_path / "auth.json").write_text('{"auths": {}}')
        base = podman_cmd(tmp_path, runroot)
        tls = ["--cert-dir", str(secure.cert_dir)]
        refused = run_status(
            [*base, "login", *tls, "-u", "ci", "-p", "wrong", secure.host], env=env
        )
        assert refused.returncode != 0
        run(
            [*base, "login", *tls, "-u", "ci", "--password-stdin", secure.host],
            env=env,
            server=secure.server,
            input=PASSWORD,
        )
        tarball = tmp_path / "rootfs.tar"
        subprocess.run(["tar", "-cf", tarball, "-C", str(tmp_path), "auth.json"], check=True)
        run([*base, "import", tarball, "localhost/secure:1"], env=env)
        ref = f"{secure.host}/team/secure:1"
        run([*base, "push", *tls, "localhost/secure:1", ref], env=env, server=secure.server)
        run([*base, "rmi", "localhost/secure:1"], env=env)
        run([*base, "pull", *tls, ref], env=env, server=secure.server)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
