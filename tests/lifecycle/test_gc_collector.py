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
from cargobay.registry.uploads import Uploads
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


def _exists(path: Path) -> bool:
    return path.exists()


def _place(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _chunks(data: bytes):  # type: ignore[no-untyped-def]
    yield data


async def _push(uploads: Uploads, repository: str, data: bytes) -> None:
    upload = await uploads.start(repository)
    async with uploads.session(repository, upload.id) as held:
        await uploads.complete(held, str(Digest.of(data, "sha256")), _chunks(data), None, None)


async def _tombstone(meta: SQLiteMetadataStore, blobs: FilesystemBlobStore, data: bytes) -> Digest:
    """A blob of `data` that the collector has decided to delete, its bytes still in place."""
    uploads = Uploads(blobs, meta)
    await _push(uploads, "old", data)
    digest = Digest.of(data, "sha256")
    assert await meta.unlink_blob("old", str(digest))
    reviews = await meta.due_blob_reviews(1e12, 10)
    assert [t.digest for t in await meta.collect_blobs([r.digest for r in reviews], 1e12)] == [
        str(digest)
    ]
    assert await blobs.stat(digest) is not None
    return digest


async def test_an_upload_after_the_decision_keeps_its_bytes(
    meta: SQLiteMetadataStore, tmp_path: Path
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "data")
    data = b"the same bytes, pushed again"
    digest = await _tombstone(meta, blobs, data)
    # The upload finds the bytes in place (and so keeps none of its own) before the collector
    # gets to delete them: the collector must then leave them.
    await _push(Uploads(blobs, meta), "new", data)
    collector = GarbageCollector(meta, blobs, GCConfig(delay_seconds=3600))
    report = await collector.collect()
    assert report is not None and report.bytes == 0
    assert await blobs.stat(digest) is not None
    assert await meta.linked_blob_size("new", str(digest)) == len(data)
    assert await meta.tombstones(10) == []


class SlowDeletes(FilesystemBlobStore):
    """Deletes wait until released: an upload of the same bytes arrives meanwhile."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleting = asyncio.Event()
        self.release = asyncio.Event()

    async def delete(self, digest: Digest) -> bool:
        self.deleting.set()
        await self.release.wait()
        return await super().delete(digest)


async def test_an_upload_racing_the_byte_delete_waits_and_writes_its_bytes(
    meta: SQLiteMetadataStore, tmp_path: Path
) -> None:
    blobs = SlowDeletes(tmp_path / "data")
    data = b"bytes being deleted while they are pushed again"
    digest = await _tombstone(meta, blobs, data)
    collector = GarbageCollector(meta, blobs, GCConfig(delay_seconds=3600))
    collecting = asyncio.create_task(collector.collect())
    await blobs.deleting.wait()  # the collector holds the digest's lock, deleting
    pushing = asyncio.create_task(_push(Uploads(blobs, meta), "new", data))
    await asyncio.sleep(0.2)
    assert not pushing.done()  # the upload waits for the lock ...
    blobs.release.set()
    await collecting
    await pushing  # ... and then writes its own bytes
    assert await blobs.stat(digest) is not None
    assert await meta.linked_blob_size("new", str(digest)) == len(data)
    assert not await meta.is_tombstoned(str(digest))


async def test_stray_files_in_the_blob_folder_are_left_alone(
    meta: SQLiteMetadataStore, tmp_path: Path
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "data")
    stray = tmp_path / "data" / "blobs" / "sha256" / "ab" / ".nfs0000000000001234"
    _place(stray, b"not a blob")
    orphan = b"bytes nobody knows"
    path = Path(blobs.local_path(Digest.of(orphan, "sha256")) or "")
    _place(path, orphan)
    collector = GarbageCollector(meta, blobs, GCConfig(delay_seconds=0))
    assert await collector.sweep(rate=1000) == 1  # only the orphan is a blob
    await asyncio.sleep(0.01)
    report = await collector.collect()
    assert report is not None and report.failures == 0 and report.bytes == len(orphan)
    assert await blobs.stat(Digest.of(orphan, "sha256")) is None
    assert _exists(stray)
