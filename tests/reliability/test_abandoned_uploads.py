"""Thousands of abandoned uploads are expired and their space reclaimed, on both setups:
sessions nobody finished, and staged data no session owns any more (what a crash between the
blob store and the metadata store leaves behind). Young uploads are left alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cargobay.storage.base import BlobStore
from cargobay.storage.filesystem import FilesystemBlobStore
from cargobay.storage.s3 import S3BlobStore
from tests.conftest import scaleout_config
from tests.server import RegistryProcess

SESSIONS = 2000  # half of them with staged data
ORPHANS = 200
# Seconds: what this test abandons is older than this when the restarted registry expires
# uploads; what it adds just before the restart stays younger however slow the restart.
EXPIRY = 20
CHUNK = b"abandoned" * 1000


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _staged(store: BlobStore) -> set[str]:
    async def ids() -> set[str]:
        return {u.upload_id async for u in store.list_uploads()}

    return asyncio.run(ids())


def _make_orphans(store: BlobStore, count: int) -> set[str]:
    """Staged data with no session: as if the process died right after writing it."""

    async def make() -> set[str]:
        made = set()
        for _ in range(count):
            upload_id = str(uuid.uuid4())
            await store.start_upload(upload_id)
            await store.append_upload(upload_id, 0, _chunks(CHUNK))
            made.add(upload_id)
        await store.close()
        return made

    return asyncio.run(make())


def _abandon_sessions(url: str, count: int) -> list[str]:
    """Start `count` uploads, put a chunk in every other one, walk away; their Locations."""

    def one(i: int) -> str:
        location = client.post(f"/v2/abandoned/r{i % 7}/blobs/uploads/").headers["Location"]
        if i % 2 == 0:
            assert client.patch(location, content=CHUNK).status_code == 202
        return location

    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("setup", ["embedded", "s3+postgres"])
def test_abandoned_uploads_are_expired_and_their_space_reclaimed(
    request: pytest.FixtureRequest,
    start_registry: Callable[..., RegistryProcess],
    tmp_path: Path,
    setup: str,
) -> None:
    data_dir = tmp_path / "data"
    config: dict[str, object] = {}
    store: Callable[[], BlobStore]
    if setup == "embedded":
        store = lambda: FilesystemBlobStore(data_dir)  # noqa: E731
    else:
        seaweedfs = request.getfixturevalue("seaweedfs")
        prefix = f"expiry{uuid.uuid4().hex[:8]}"
        config = scaleout_config(
            seaweedfs, request.getfixturevalue("postgres").create_database(prefix), prefix
        )
        s3 = config["storage"]["s3"]  # type: ignore[index]
        store = lambda: S3BlobStore(  # noqa: E731
            s3["bucket"],
            endpoint=s3["endpoint"],
            region=s3["region"],
            path_style=True,
            access_key_id=s3["access_key_id"],
            secret_access_key=s3["secret_access_key"],
            prefix=prefix,
        )

    server = start_registry(data_dir=data_dir, workers=2, config=config)
    abandoned = _abandon_sessions(server.url, SESSIONS)
    orphans = _make_orphans(store(), ORPHANS)
    old_enough = time.time() + EXPIRY + 1
    staged_before = _staged(store())
    assert len(staged_before) == SESSIONS + ORPHANS
    if setup == "embedded":
        staged_bytes = sum(f.stat().st_size for f in (data_dir / "uploads").iterdir())
        assert staged_bytes == (SESSIONS // 2 + ORPHANS) * len(CHUNK)
    server.stop()

    # Let the abandoned uploads age past the expiry (this is the behaviour under test, not
    # synchronisation), then add young ones that must survive.
    time.sleep(max(0.0, old_enough - time.time()))
    young_orphans = _make_orphans(store(), 3)
    server = start_registry(
        data_dir=data_dir,
        workers=2,
        config={**config, "registry": {"upload_expiry_seconds": EXPIRY}},
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        young = client.post("/v2/abandoned/young/blobs/uploads/").headers["Location"]
        assert client.patch(young, content=b"still going").status_code == 202
        # Expiry runs in each worker when it starts; wait for its effect, with a deadline.
        deadline = time.monotonic() + 240
        while _staged(store()) != young_orphans | {young.rsplit("/", 1)[1]}:
            assert time.monotonic() < deadline, len(_staged(store()))
            time.sleep(0.5)
        for location in abandoned[:: SESSIONS // 50]:
            gone = client.get(location)
            assert gone.status_code == 404, gone.text
            assert gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert client.get(young).headers["Range"] == "0-10"  # untouched
    if setup == "embedded":
        left = {f.name: f.stat().st_size for f in (data_dir / "uploads").iterdir()}
        assert sum(left.values()) == 3 * len(CHUNK) + len(b"still going")
    assert not orphans & _staged(store())
    removed = sum(
        int(line.split("removed ")[1].split()[0])
        for line in server.log().splitlines()
        if "expired uploads" in line and "removed " in line
    )
    assert removed == SESSIONS + ORPHANS, removed
    assert "Traceback" not in server.log()
