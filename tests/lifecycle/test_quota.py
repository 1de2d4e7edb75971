"""Quotas (`quotas`) over HTTP on both setups (files + SQLite; S3 + PostgreSQL with two
instances): pushes within a quota pass, the push that would exceed it is refused with the
message the user sees, a full quota refuses uploads and mounts before any byte is sent, garbage
collection frees quota, concurrent pushes never overshoot; then `cargobay quota`, the size
parser and message format, and skopeo and podman seeing the refusal.

Each test has quotas of its own (repository globs nobody else uses) on registries shared by the
module; their background collector is off, and `cargobay gc` runs when a test needs it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cargobay.config import RegistryConfig
from cargobay.errors import Unavailable
from cargobay.lifecycle.quota import Quota, Quotas, format_size
from cargobay.metadata.sqlite import SQLiteMetadataStore
from cargobay.registry.registry import Registry
from cargobay.storage.filesystem import FilesystemBlobStore
from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    canonical,
    digest_of,
    image_manifest,
    push_blob,
    push_manifest,
    random_blob,
)
from tests.clients.helpers import (
    OciLayout,
    containers_env,
    podman_cmd,
    run,
    run_status,
    short_runroot,
)
from tests.conftest import BACKENDS, TLS_CONTEXT, require_tool, scaleout_config
from tests.server import RegistryProcess

KIB = 1024
QUOTAS: list[dict[str, Any]] = [
    {"repositories": ["bytes/*"], "max_bytes": "10KiB"},
    {"repositories": ["shared/*"], "max_bytes": 10_000},
    {"repositories": ["tags/*"], "max_tags": 3},
    {"repositories": ["freed/*"], "max_bytes": "8KiB"},
    {"repositories": ["full/*"], "max_bytes": 2_000},
    {"repositories": ["race/*"], "max_bytes": 7_000},
    {"repositories": ["racetags/*"], "max_tags": 5},
    # Two quotas over one repository: each is checked.
    {"repositories": ["both/*"], "max_tags": 2},
    {"repositories": ["both/limited", "solo/*"], "max_bytes": 1_000},
    {"repositories": ["late/*"], "max_bytes": 1_000},
]


@dataclass
class QuotaSetup:
    """One registry (embedded: one instance of 2 workers; scaled out: two instances sharing
    S3 and PostgreSQL)."""

    servers: list[RegistryProcess]
    config_file: Path
    data_dir: Path

    def client(self, index: int = 0) -> httpx.Client:
        server = self.servers[index % len(self.servers)]
        return httpx.Client(base_url=server.url, timeout=60, verify=TLS_CONTEXT)

    def cargobay(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A `cargobay` command against this registry's data, as an operator runs it."""
        command = [sys.executable, "-m", "cargobay", *args, "--config", str(self.config_file)]
        command += ["--data-dir", str(self.data_dir)]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "200", **env},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def collect_garbage(self) -> None:
        self.cargobay("gc", "--no-sweep", CARGOBAY_GC__DELAY_SECONDS="0")


@pytest.fixture(scope="module", params=BACKENDS)
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuotaSetup]:
    root = tmp_path_factory.mktemp("quota")
    config: dict[str, Any] = {"quotas": QUOTAS, "gc": {"enabled": False}}
    instances = 1
    if request.param != "embedded":
        seaweedfs = request.getfixturevalue("seaweedfs")
        prefix = f"quota{uuid.uuid4().hex[:8]}"
        database = request.getfixturevalue("postgres").create_database(prefix)
        config.update(scaleout_config(seaweedfs, database, prefix))
        instances = 2
    servers = [
        RegistryProcess(root / f"data{i}", workers=2, config=config).start()
        for i in range(instances)
    ]
    yield QuotaSetup(servers, root / "data0-config.yml", root / "data0")
    for server in servers:
        server.stop()


def repo(quota: str) -> str:
    return f"{quota}/{uuid.uuid4().hex[:8]}"


def blobs_of(config_size: int, *layer_sizes: int) -> tuple[bytes, list[bytes]]:
    return random_blob(config_size), [random_blob(size) for size in layer_sizes]


def push_image(
    client: httpx.Client,
    name: str,
    tag: str,
    config: bytes,
    layers: list[bytes],
    *,
    expect: int | None = 201,
) -> httpx.Response:
    """Upload the blobs (uploads are never refused by a quota that is not full), then PUT the
    manifest referencing them."""
    for blob in [config, *layers]:
        push_blob(client, name, blob)
    return push_manifest(
        client, name, tag, canonical(image_manifest(config, layers)), expect=expect
    )


def assert_refused(response: httpx.Response, message: str) -> None:
    assert_error(response, 403, "DENIED")
    (error,) = response.json()["errors"]
    assert error["message"] == message


def test_a_push_over_the_byte_limit_is_refused(setup: QuotaSetup) -> None:
    first, second = repo("bytes"), repo("bytes")
    with setup.client() as client:
        push_image(client, first, "a", *blobs_of(1 * KIB, 3 * KIB))
        push_image(client, second, "b", *blobs_of(1 * KIB, 3 * KIB))  # 8 KiB of 10 KiB
        config, layers = blobs_of(1 * KIB, 1229)
        r = push_image(client, first, "c", config, layers, expect=None)
        assert_refused(r, "quota exceeded: storage, 10.2 KiB of 10 KiB (quota bytes/*)")
        assert client.get(f"/v2/{first}/tags/list").json()["tags"] == ["a"]
        # What fits exactly still passes; the quota is then full.
        push_image(client, second, "d", *blobs_of(1 * KIB, 1 * KIB))


def test_a_blob_shared_by_two_repositories_counts_once(setup: QuotaSetup) -> None:
    first, second = repo("shared"), repo("shared")
    layer = random_blob(6_000)
    with setup.client() as client:
        push_image(client, first, "v1", random_blob(100), [layer])
        r = client.post(
            f"/v2/{second}/blobs/uploads/", params={"mount": digest_of(layer), "from": first}
        )
        assert r.status_code == 201, r.text
        # 6,200 bytes charged, not 12,200: the second image fits in 10,000.
        push_image(client, second, "v1", random_blob(100), [layer])
        r = push_image(client, second, "v2", random_blob(100), [random_blob(3_701)], expect=None)
        # Both round to 9.8 KiB: the message gives the exact numbers.
        assert_refused(r, "quota exceeded: storage, 10,001 bytes of 10,000 bytes (quota shared/*)")
    shown = setup.cargobay("quota").stdout
    assert "shared/*" in shown and "6.05 KiB" in shown, shown


def test_a_push_over_the_tag_limit_is_refused(setup: QuotaSetup) -> None:
    first, second = repo("tags"), repo("tags")
    with setup.client() as client:
        config, layers = blobs_of(100, 100)
        push_image(client, first, "v1", config, layers)
        body = canonical(image_manifest(config, layers))
        push_manifest(client, first, "v2", body)
        push_image(client, second, "v1", *blobs_of(100, 100))
        r = push_image(client, second, "v2", *blobs_of(100, 100), expect=None)
        assert_refused(r, "quota exceeded: tags, 4 of 3 (quota tags/*)")
        push_manifest(client, first, "v2", body)  # pushed again: no new tag
        assert client.delete(f"/v2/{first}/manifests/v2").status_code == 202
        push_image(client, second, "v2", *blobs_of(100, 100))


def test_each_quota_of_a_repository_is_checked(setup: QuotaSetup) -> None:
    limited = "both/limited"
    with setup.client() as client:
        push_image(client, limited, "v1", *blobs_of(100, 100))
        r = push_image(client, limited, "v2", *blobs_of(100, 701), expect=None)
        assert_refused(r, "quota exceeded: storage, 1001 B of 1000 B (quota both/limited, solo/*)")
        push_image(client, limited, "v2", *blobs_of(100, 100))
        r = push_image(client, repo("both"), "v1", *blobs_of(10, 10), expect=None)
        assert_refused(r, "quota exceeded: tags, 3 of 2 (quota both/*)")


def test_garbage_collection_frees_quota(setup: QuotaSetup) -> None:
    name = repo("freed")
    with setup.client() as client:
        r = push_image(client, name, "old", *blobs_of(1 * KIB, 5 * KIB))
        old = r.headers["Docker-Content-Digest"]
        refused = push_image(client, name, "new", *blobs_of(1 * KIB, 3 * KIB), expect=None)
        assert_refused(refused, "quota exceeded: storage, 10 KiB of 8 KiB (quota freed/*)")
        assert client.delete(f"/v2/{name}/manifests/{old}").status_code == 202
        # Deleted, but its blobs are still linked until garbage collection removes them.
        refused = push_image(client, name, "new", *blobs_of(1 * KIB, 3 * KIB), expect=None)
        assert_refused(refused, "quota exceeded: storage, 10 KiB of 8 KiB (quota freed/*)")
    setup.collect_garbage()
    with setup.client(1) as client:
        push_image(client, name, "new", *blobs_of(1 * KIB, 3 * KIB))
        push_image(client, name, "newer", *blobs_of(1 * KIB, 3 * KIB))  # exactly 8 KiB


def test_a_full_quota_refuses_uploads_and_mounts_at_once(setup: QuotaSetup) -> None:
    name, other = repo("full"), repo("outside")
    message = "quota exceeded: storage, 1.95 KiB of 1.95 KiB (quota full/*)"
    with setup.client() as client:
        config, layers = blobs_of(500, 1_500)
        push_image(client, name, "v1", config, layers)  # exactly full
        push_blob(client, other, layers[0])
        for params in ({}, {"digest": digest_of(b"x")}, {"mount": digest_of(layers[0])}):
            r = client.post(f"/v2/{repo('full')}/blobs/uploads/", params=params, content=b"x")
            assert_refused(r, message)
        r = client.post(
            f"/v2/{name}/blobs/uploads/", params={"mount": digest_of(layers[0]), "from": other}
        )
        assert_refused(r, message)
        # Anything else, and pulls, go on.
        assert client.post(f"/v2/{other}/blobs/uploads/").status_code == 202
        r = client.get(f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200


def test_an_upload_started_before_the_quota_filled_completes(setup: QuotaSetup) -> None:
    """The spec expects blobs before their manifest: an upload started while there was room
    completes, and the manifest that would reference it is refused."""
    name = repo("late")
    with setup.client() as client:
        started = client.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202
        push_image(client, name, "v1", *blobs_of(300, 700))  # fills it meanwhile
        assert_refused(
            client.post(f"/v2/{name}/blobs/uploads/"),
            "quota exceeded: storage, 1000 B of 1000 B (quota late/*)",
        )
        layer = random_blob(50)
        location = httpx.URL(started.headers["Location"]).copy_merge_params(
            {"digest": digest_of(layer)}
        )
        assert client.put(location.raw_path.decode(), content=layer).status_code == 201
        r = push_manifest(client, name, "v2", canonical(image_manifest(layer, [])), expect=None)
        assert_refused(r, "quota exceeded: storage, 1.03 KiB of 1000 B (quota late/*)")


@pytest.mark.parametrize("quota", ["race", "racetags"])
def test_concurrent_pushes_never_exceed_a_quota(setup: QuotaSetup, quota: str) -> None:
    """20 clients (spread over the instances) each push an image into a quota with room for 7
    of them (race: 1,000-byte images, 7,000 bytes) or for 5 tags (racetags): exactly that
    many pass, the others are refused, and the usage ends at the limit."""
    names = [repo(quota) for _ in range(4)]
    images = []
    with setup.client() as client:
        for index in range(20):
            config, layers = blobs_of(200, 800)
            for blob in [config, *layers]:
                push_blob(client, names[index % 4], blob)
            images.append(canonical(image_manifest(config, layers)))
    barrier = threading.Barrier(len(images))

    def push(index: int) -> httpx.Response:
        with setup.client(index) as client:
            barrier.wait()
            return push_manifest(client, names[index % 4], f"t{index}", images[index], expect=None)

    with ThreadPoolExecutor(len(images)) as pool:
        responses = list(pool.map(push, range(len(images))))
    passed = [r for r in responses if r.status_code == 201]
    expected = {"race": 7, "racetags": 5}[quota]
    assert len(passed) == expected, [r.status_code for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_error(response, 403, "DENIED")
            assert response.json()["errors"][0]["message"].startswith("quota exceeded: ")
    shown = setup.cargobay("quota").stdout
    line = next(line for line in shown.splitlines() if f" {quota}/* " in line)
    if quota == "race":
        assert f" {format_size(7_000)} " in line, shown
    else:
        assert " 5 " in line, shown


def test_the_quota_command_shows_every_quota(setup: QuotaSetup) -> None:
    shown = setup.cargobay("quota").stdout
    for quota in QUOTAS:
        assert ", ".join(quota["repositories"]) in shown, shown
    assert "unlimited" in shown and "repositories" in shown


async def test_a_quota_dropped_again_during_the_retried_push_is_unavailable(
    tmp_path: Path,
) -> None:
    """The push finds the quota dropped (by an instance configured without it), sets it up,
    and finds it dropped again at the retry: 503 UNAVAILABLE, not a 500."""
    meta = SQLiteMetadataStore(tmp_path / "metadata.db")
    meta.migrate()
    quotas = Quotas(meta, [Quota(("team/*",), 1000, None)])
    registry = Registry(FilesystemBlobStore(tmp_path), meta, RegistryConfig(), quotas=quotas)
    store_manifest = meta.put_manifest

    async def dropped_first(*args: Any, **kwargs: Any) -> None:
        await meta.set_up_quotas({}, drop_others=True)
        await store_manifest(*args, **kwargs)

    meta.put_manifest = dropped_first  # type: ignore[method-assign]
    index = b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % OCI_INDEX.encode()
    try:
        with pytest.raises(Unavailable) as refused:
            await registry.put_manifest("team/a", "v1", index, OCI_INDEX)
    finally:
        await meta.close()
    assert refused.value.status == 503
    assert refused.value.message == (
        "quota team/* is being set up (an instance configured without it dropped it), retry later"
    )


# -- real clients ------------------------------------------------------------------------------


def client_registry(start_registry: Callable[..., RegistryProcess]) -> RegistryProcess:
    return start_registry(config={"quotas": [{"repositories": ["app/*"], "max_bytes": 100}]})


@pytest.mark.clients
def test_skopeo_shows_the_quota_refusal(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    skopeo = require_tool("skopeo")
    server = client_registry(start_registry)
    layout = OciLayout(tmp_path / "layout")
    layout.tag(layout.add_image({"big.txt": os.urandom(4096)}), "big")
    refused = run_status(
        [
            skopeo, "copy", "--dest-tls-verify=false",
            f"oci:{layout.root}:big", f"docker://{server.host}/app/one:v1",
        ]
    )  # fmt: skip
    assert refused.returncode != 0
    shown = refused.stderr
    assert "denied: quota exceeded: storage, " in shown, shown
    assert " of 100 B (quota app/*)" in shown, shown


@pytest.mark.clients
def test_podman_shows_the_quota_refusal(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    require_tool("podman")
    server = client_registry(start_registry)
    env = containers_env(tmp_path, server.host)
    runroot = short_runroot()
    try:
        podman = podman_cmd(tmp_path / "storage", runroot)
        tarball = tmp_path / "rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            info = tarfile.TarInfo("big.bin")
            info.size = 4096
            tar.addfile(info, io.BytesIO(os.urandom(4096)))
        run([*podman, "import", tarball, "localhost/big:1"], env=env)
        refused = run_status(
            [*podman, "push", "--tls-verify=false", "localhost/big:1", f"{server.host}/app/two:1"],
            env=env,
        )
        assert refused.returncode != 0
        assert "quota exceeded: storage, " in refused.stderr, refused.stderr
        assert " of 100 B (quota app/*)" in refused.stderr, refused.stderr
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_metrics_export_quota_usage(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    from tests.test_metrics import free_port, scrape, value

    quotas = [{"repositories": ["app/*"], "max_bytes": "1MiB", "max_tags": 10}]
    first = start_registry(data_dir=tmp_path / "data", config={"quotas": quotas})
    with httpx.Client(base_url=first.url, timeout=60, verify=TLS_CONTEXT) as client:
        push_image(client, "app/one", "v1", *blobs_of(100, 900))
    first.stop()
    # Usage is exported when a worker starts, then every 30 s.
    port = free_port()
    config = {"quotas": quotas, "metrics": {"listen": f"127.0.0.1:{port}"}}
    start_registry(data_dir=tmp_path / "data", config=config)
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        if ("cargobay_quota_used_bytes", (("quota", "app/*"),)) in samples:
            break
        assert time.monotonic() < deadline, "no quota metrics"
        time.sleep(0.1)
    assert value(samples, "cargobay_quota_used_bytes", quota="app/*") == 1000
    assert value(samples, "cargobay_quota_limit_bytes", quota="app/*") == 1 << 20
    assert value(samples, "cargobay_quota_used_tags", quota="app/*") == 1
    assert value(samples, "cargobay_quota_limit_tags", quota="app/*") == 10
    assert value(samples, "cargobay_quota_repositories", quota="app/*") == 1
