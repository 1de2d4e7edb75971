"""docs/deploy.md as written: three instances started from examples/scaleout.yml with their
connections in the conventional environment variables, behind Debian's nginx configured by
examples/nginx.conf (TLS at nginx), with real clients pushing and pulling through it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import digest_of, location_url, with_query
from tests.clients.helpers import layout_ref, run, umoci_image
from tests.conftest import require_tool
from tests.server import RegistryProcess
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import SeaweedFS
from tests.tls import make_certificates

EXAMPLES = Path(__file__).parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_config(folder: Path, port: int, upstreams: list[str], cert: Path, key: Path) -> Path:
    """examples/nginx.conf with this test's addresses, inside a minimal main config."""
    site = (EXAMPLES / "nginx.conf").read_text()
    servers = "".join(f"    server {u} max_fails=2 fail_timeout=5s;\n" for u in upstreams)
    site, count = re.subn(r"(    server \S+ max_fails=2 fail_timeout=5s;\n)+", servers, site)
    assert count == 1
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = site.replace("/etc/ssl/cargobay/fullchain.pem", str(cert))
    site = site.replace("/etc/ssl/cargobay/privkey.pem", str(key))
    (folder / "site.conf").write_text(site)
    main = folder / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        "worker_processes 1;\nevents {}\n"
        f"http {{\n  access_log {folder}/access.log;\n"
        f"  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  fastcgi_temp_path {folder}/fastcgi;\n  uwsgi_temp_path {folder}/uwsgi;\n"
        f"  scgi_temp_path {folder}/scgi;\n  include {folder}/site.conf;\n}}\n"
    )
    return main


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[list[str]], tuple[str, Path]]]:
    """Start nginx in front of the given upstreams; returns its host:port and a CA folder."""
    binary = require_tool("nginx")
    processes: list[subprocess.Popen[bytes]] = []

    def start(upstreams: list[str]) -> tuple[str, Path]:
        certificates = make_certificates(tmp_path / "tls")
        folder = tmp_path / "nginx"
        folder.mkdir()
        port = free_port()
        config = nginx_config(folder, port, upstreams, certificates.certificate, certificates.key)
        subprocess.run([binary, "-t", "-c", config, "-p", folder], check=True, capture_output=True)
        processes.append(subprocess.Popen([binary, "-c", config, "-p", folder]))
        ca_dir = tmp_path / "ca"
        ca_dir.mkdir()
        shutil.copy(certificates.ca, ca_dir / "ca.crt")
        for _ in range(300):  # poll until nginx accepts connections
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"127.0.0.1:{port}", ca_dir
            if processes[-1].poll() is not None:
                break
            threading.Event().wait(0.05)
        raise AssertionError((folder / "error.log").read_text())

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def test_three_instances_from_the_example_behind_nginx(
    tmp_path: Path,
    start_registry: Callable[..., RegistryProcess],
    seaweedfs: SeaweedFS,
    postgres: PostgresServer,
    nginx: Callable[[list[str]], tuple[str, Path]],
) -> None:
    skopeo = require_tool("skopeo")
    require_tool("umoci")
    name = f"deploy{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": postgres.create_database(name),
        "S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "S3_BUCKET": seaweedfs.bucket,
        "S3_PATH_STYLE": "true",
        "S3_PREFIX": name,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AWS_REGION": seaweedfs.region,
        "CARGOBAY_SECRET": uuid.uuid4().hex,
    }
    config = EXAMPLES / "scaleout.yml"
    instances = [start_registry(config_file=config, env=env, workers=1) for _ in range(3)]
    host, ca_dir = nginx([i.host for i in instances])

    layout = umoci_image(tmp_path / "image", "v1", {"hello.txt": b"hello through nginx\n"})
    target = f"docker://{host}/team/app:v1"
    run([skopeo, "copy", "--dest-cert-dir", ca_dir, f"oci:{layout}:v1", target])
    digest = run(
        [skopeo, "inspect", "--cert-dir", ca_dir, "--format", "{{.Digest}}", target]
    ).stdout.strip()
    assert digest == layout_ref(layout, "v1")["digest"]

    # A chunked upload whose requests nginx spreads over the instances.
    chunks = [bytes([n]) * 70_000 for n in range(6)]
    verify = ssl.create_default_context(cafile=ca_dir / "ca.crt")
    with httpx.Client(base_url=f"https://{host}", verify=verify, timeout=60) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["Location"]
        offset = 0
        for chunk in chunks:
            r = client.patch(
                location_url(location),
                content=chunk,
                headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
            )
            assert r.status_code == 202, r.text
            location, offset = r.headers["Location"], offset + len(chunk)
        whole = b"".join(chunks)
        r = client.put(with_query(location, digest=digest_of(whole)))
        assert r.status_code == 201, r.text

    # One instance dies; nginx sends reads to the others.
    instances[0].kill()
    pulled = tmp_path / "pulled"
    run([skopeo, "copy", "--src-cert-dir", ca_dir, target, f"oci:{pulled}:v1"])
    assert layout_ref(pulled, "v1")["digest"] == digest
    with httpx.Client(
        base_url=f"https://{host}", verify=verify, timeout=60, follow_redirects=True
    ) as client:
        for _ in range(3):
            assert client.get(f"/v2/team/app/blobs/{digest_of(whole)}").content == whole
