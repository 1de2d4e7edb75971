"""The collector with the real embedded stores in-process: what it does when the blob store
fails to delete, and when two collectors run at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cargobay.config import GCConfig
from cargobay.errors import Unavailable
from cargobay.lifecycle.gc import GarbageCollector
from cargobay.metadata.base import UploadRecord
from cargobay.metadata.sqlite import SQLiteMetadataStore
from cargobay.registry.digest import Digest
from cargobay.storage.filesystem import FilesystemBlobStore


class FailingDeletes(FilesystemBlobStore):
    """The filesystem store, but its first `failures` deletes fail as an object store's can."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    async def delete(self, digest: Digest) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable("the blob store is unavailable (injected)")
        return await super().delete(digest)


async def store_blobs(
    meta: SQLiteMetadataStore, blobs: FilesystemBlobStore, count: int
) -> list[Digest]:
    digests = []
    for i in range(count):
        data = f"blob {i}".encode()
        digest = Digest.of(data, "sha256")
        upload = UploadRecord(id=f"00000000-0000-4000-8000-{i:012d}", repository="r",
                              algorithm="sha256")  # fmt: skip
        await blobs.start_upload(upload.id)

        async def body(data: bytes = data):  # type: ignore[no-untyped-def]
            yield data

        await blobs.append_upload(upload.id, 0, body())
        await blobs.commit_upload(upload.id, len(data), digest)
        await meta.create_upload(upload)
        await meta.complete_upload(upload, str(digest), len(data))
        digests.append(digest)
    return digests


@pytest.fixture
async def meta(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SQLiteMetadataStore(tmp_path / "metadata.db")
    store.migrate()
    yield store
    await store.close()


async def test_failed_deletes_leave_tombstones_that_the_next_collection_finishes(
    meta: SQLiteMetadataStore, tmp_path: Path
) -> None:
    blobs = FailingDeletes(tmp_path / "data", failures=3)
    digests = await store_blobs(meta, blobs, 40)
    collector = GarbageCollector(meta, blobs, GCConfig(delay_seconds=0))
    await asyncio.sleep(0.01)
    first = await collector.collect()
    assert first is not None and first.failures >= 1
    assert len(first.links) == 40 and len(first.blobs) == 40
    # Decided: the metadata says every blob is gone, even those whose bytes are still there.
    for digest in digests:
        assert await meta.linked_blob_size("r", str(digest)) is None
        assert await meta.blob_size(str(digest)) is None
    left = await meta.tombstones(100)
    assert left, "the failed deletions keep their tombstones"
    for tombstone in left:  # and their bytes are still there: nothing half-deleted
        assert await blobs.stat(Digest.parse(tombstone.digest)) is not None
    while blobs.failures:  # the store recovers: the next collections finish the job
        await collector.collect()
    second = await collector.collect()
    assert second is not None and second.failures == 0
    assert await meta.tombstones(100) == []
    for digest in digests:
        assert await blobs.stat(digest) is None


async def test_two_collectors_at_once_one_collects(
    meta: SQLiteMetadataStore, tmp_path: Path
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "data")
    await store_blobs(meta, blobs, 20)
    other = SQLiteMetadataStore(tmp_path / "metadata.db")  # another process's connection
    try:
        config = GCConfig(delay_seconds=0)
        one = GarbageCollector(meta, blobs, config)
        two = GarbageCollector(other, blobs, config)
        await asyncio.sleep(0.01)
        reports = await asyncio.gather(one.collect(), two.collect())
        done = [r for r in reports if r is not None]
        # The lock is an flock per open file: within one process two holders exclude each
        # other too, so at most one collection ran at a time, and together they did it all.
        assert sum(len(r.blobs) for r in done) == 20
        # Every deleted blob's bytes are counted (deletions run concurrently).
        assert sum(r.bytes for r in done) == sum(len(f"blob {i}") for i in range(20))
        assert await meta.tombstones(100) == []
    finally:
        await other.close()
