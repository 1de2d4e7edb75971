"""A disk that fills up: uploads and pushes fail cleanly (a clear 5xx with the spec's error
envelope, never a partial blob, never a broken database), everything acknowledged stays
readable, and the registry works again as soon as space returns, without a restart."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import OCI_MANIFEST, canonical, image_manifest
from tests.conftest import IN_CI
from tests.server import RegistryProcess

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of the test's own (mounting needs root)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def _resize(mountpoint: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mountpoint)], check=True)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    started = client.post(f"/v2/{name}/blobs/uploads/")
    if started.status_code != 202:
        return started
    return client.put(started.headers["Location"], params={"digest": _digest(data)}, content=data)


def _push_image(client: httpx.Client, name: str, tag: str, layer: bytes) -> tuple[str, bytes]:
    config = json.dumps({"tag": tag}).encode()
    for blob in (config, layer):
        assert _push_blob(client, name, blob).status_code == 201
    body = canonical(image_manifest(config, [layer]))
    put = client.put(
        f"/v2/{name}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert put.status_code == 201, put.text
    return _digest(body), body


def _assert_clean_failure(reply: httpx.Response) -> None:
    assert reply.status_code == 507, (reply.status_code, reply.text)
    error = reply.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and "space" in error["message"], reply.text


@pytest.mark.timeout(300)
def test_a_full_disk_fails_uploads_cleanly_and_the_registry_recovers(
    start_registry: Callable[..., RegistryProcess], small_disk: Path
) -> None:
    data_dir = small_disk / "data"
    server = start_registry(data_dir=data_dir, workers=1)
    acknowledged: dict[str, bytes] = {}  # blob digest -> content
    with httpx.Client(base_url=server.url, timeout=60) as client:
        manifest, manifest_body = _push_image(client, "full/app", "v1", os.urandom(MiB))

        # Fill the disk with 2 MiB blobs, each pushed in two chunks, until a push fails.
        failure: httpx.Response | None = None
        for _ in range(40):
            data = os.urandom(2 * MiB)
            location = client.post("/v2/full/fill/blobs/uploads/").headers.get("Location")
            if location is None:
                break
            first = client.patch(location, content=data[:MiB])
            if first.status_code != 202:
                failure = first
                break
            done = client.put(location, params={"digest": _digest(data)}, content=data[MiB:])
            if done.status_code != 201:
                failure = done
                break
            acknowledged[_digest(data)] = data
        assert failure is not None, "the 24 MiB disk never filled up"
        _assert_clean_failure(failure)
        assert len(acknowledged) >= 5

        # While full: more writes fail cleanly, reads work, nothing half-written is visible.
        data = os.urandom(3 * MiB)
        _assert_clean_failure(_push_blob(client, "full/fill", data))
        assert client.head(f"/v2/full/fill/blobs/{_digest(data)}").status_code == 404
        # (A manifest may still fit in the database's free pages; it must never be torn.)
        tagged = client.put(
            "/v2/full/app/manifests/while-full",
            content=manifest_body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert tagged.status_code in {201, 507}, tagged.text
        if tagged.status_code == 507:
            _assert_clean_failure(tagged)
        # Fill what is left with manifests (200 KiB of annotations each) until the metadata
        # database cannot commit: that is refused cleanly too, and rolled back.
        manifests: dict[str, bytes] = {}
        refused: httpx.Response | None = None
        document = json.loads(manifest_body)
        for i in range(200):
            document["annotations"] = {"filler": f"{i}-" + "x" * 200_000}
            body = canonical(document)
            put = client.put(
                f"/v2/full/app/manifests/m{i}", content=body, headers={"Content-Type": OCI_MANIFEST}
            )
            if put.status_code != 201:
                refused = put
                break
            manifests[f"m{i}"] = body
        assert refused is not None, "the metadata database never ran out of space"
        _assert_clean_failure(refused)
        assert "metadata database" in refused.json()["errors"][0]["message"]
        for digest in acknowledged:
            got = client.get(f"/v2/full/fill/blobs/{digest}")
            assert got.status_code == 200 and _digest(got.content) == digest
        assert client.get("/v2/full/app/manifests/v1").content == manifest_body
        for tag, body in manifests.items():
            assert client.get(f"/v2/full/app/manifests/{tag}").content == body
        assert client.get("/readyz").status_code in {200, 503}

        # Space returns: the same registry takes pushes again, old data intact.
        _resize(small_disk, "64m")
        for _ in range(3):
            data = os.urandom(2 * MiB)
            assert _push_blob(client, "full/fill", data).status_code == 201
            acknowledged[_digest(data)] = data
        _push_image(client, "full/app", "v2", os.urandom(MiB))
        assert client.get("/readyz").status_code == 200
        for digest, content in acknowledged.items():
            got = client.get(f"/v2/full/fill/blobs/{digest}")
            assert got.status_code == 200 and got.content == content
        assert client.get(f"/v2/full/app/manifests/{manifest}").content == manifest_body
        tags = client.get("/v2/full/app/tags/list").json()["tags"]
        assert {"v1", "v2", *manifests} <= set(tags)
        for tag, body in manifests.items():
            assert client.get(f"/v2/full/app/manifests/{tag}").content == body
    server.stop()

    # The database and the blobs are sound: `cargobay verify --digests` finds no problem.
    verify = subprocess.run(
        [sys.executable, "-m", "cargobay", "verify", "--digests", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with contextlib.suppress(FileNotFoundError):
        leftovers = list((small_disk / "data" / "uploads").iterdir())
        assert len(leftovers) <= 2, leftovers  # the failed sessions, expired later
    assert "Traceback" not in server.log(), server.log()[-4000:]
