"""Real clients against a registry with TLS and htpasswd basic authentication."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cargobay.auth.htpasswd import hash_password
from tests.clients.helpers import podman_cmd, run, run_status, short_runroot, umoci_image
from tests.conftest import require_tool
from tests.server import RegistryProcess
from tests.tls import make_certificates, write_signing_key

pytestmark = pytest.mark.clients


def test_skopeo_pushes_and_pulls_over_tls_with_credentials(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    skopeo = require_tool("skopeo")
    require_tool("umoci")
    certificates = make_certificates(tmp_path / "tls")
    cert_dir = tmp_path / "certs"  # what containers/image reads: a folder with ca.crt
    cert_dir.mkdir()
    shutil.copy(certificates.ca, cert_dir / "ca.crt")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{hash_password('ci-password', rounds=4)}\n")
    server = start_registry(
        config={
            "auth": {"htpasswd": str(htpasswd)},
            "tls": {"certificate": str(certificates.certificate), "key": str(certificates.key)},
        }
    )
    layout = umoci_image(tmp_path / "image", "v1", {"hello.txt": b"hello over TLS\n"})
    target = f"docker://{server.host}/secure/app:v1"

    refused = run_status([skopeo, "copy", "--dest-cert-dir", cert_dir, f"oci:{layout}:v1", target])
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr

    run(
        [skopeo, "copy", "--dest-cert-dir", cert_dir, "--dest-creds", "ci:ci-password",
         f"oci:{layout}:v1", target],
        server=server,
    )  # fmt: skip
    inspected = run(
        [skopeo, "inspect", "--cert-dir", cert_dir, "--creds", "ci:ci-password", "--raw", target],
        server=server,
    )
    local = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert json.loads(inspected.stdout)["config"]["digest"]
    raw_digest = run(
        [skopeo, "inspect", "--cert-dir", cert_dir, "--creds", "ci:ci-password",
         "--format", "{{.Digest}}", target],
        server=server,
    ).stdout.strip()  # fmt: skip
    assert raw_digest == local["digest"]

    authfile = tmp_path / "auth.json"  # what `podman login` / `docker login` write
    secret = base64.b64encode(b"ci:ci-password").decode()
    authfile.write_text(json.dumps({"auths": {server.host: {"auth": secret}}}))
    via_authfile = run(
        [skopeo, "inspect", "--cert-dir", cert_dir, "--authfile", authfile,
         "--format", "{{.Digest}}", target],
        server=server,
    ).stdout.strip()  # fmt: skip
    assert via_authfile == local["digest"]


def test_skopeo_and_podman_with_token_authentication(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    """The clients follow the Bearer challenge to the built-in token server on their own."""
    skopeo = require_tool("skopeo")
    require_tool("podman")
    require_tool("umoci")
    key = write_signing_key(tmp_path / "signing.pem")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{hash_password('ci-password', rounds=4)}\n")
    server = start_registry(
        config={
            "auth": {
                "htpasswd": str(htpasswd),
                "token": {"issuer": "test", "service": "cargobay", "signing_key": str(key)},
            }
        }
    )
    layout = umoci_image(tmp_path / "image", "v1", {"t.txt": b"token auth\n"})
    target = f"docker://{server.host}/token/app:v1"
    plain = "--dest-tls-verify=false"
    refused = run_status([skopeo, "copy", plain, "--dest-no-creds", f"oci:{layout}:v1", target])
    assert refused.returncode != 0
    run(
        [skopeo, "copy", plain, "--dest-creds", "ci:ci-password", f"oci:{layout}:v1", target],
        server=server,
    )
    runroot = short_runroot()
    try:
        env = {"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
        (tmp_path / "auth.json").write_text('{"auths": {}}')
        base = podman_cmd(tmp_path, runroot)
        run(
            [*base, "login", "--tls-verify=false", "-u", "ci", "--password-stdin", server.host],
            env=env,
            input="ci-password",
        )
        run([*base, "pull", "--tls-verify=false", f"{server.host}/token/app:v1"], env=env)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
