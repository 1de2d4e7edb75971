"""The blob store contract (cargobay.storage.base.BlobStore), run against every driver."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable

import pytest

from cargobay.registry.digest import Digest
from cargobay.storage.base import BlobStore, UploadMissing


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def put(store: BlobStore, data: bytes, upload_id: str = "u1") -> Digest:
    await store.start_upload(upload_id)
    size = await store.append_upload(upload_id, 0, stream(data))
    digest = digest_of(data)
    await store.commit_upload(upload_id, size, digest)
    return digest


async def test_missing_blob_has_no_stat(store: BlobStore) -> None:
    assert await store.stat(digest_of(b"nothing")) is None


async def test_upload_commit_makes_blob_readable(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = await put(store, data)
    stat = await store.stat(digest)
    assert stat is not None and stat.size == len(data)
    assert await collect(store.read(digest)) == data


async def test_read_range(store: BlobStore) -> None:
    data = bytes(range(256)) * 100
    digest = await put(store, data)
    assert await collect(store.read(digest, 10, 20)) == data[10:30]
    assert await collect(store.read(digest, len(data) - 5)) == data[-5:]


async def test_blob_invisible_until_committed(store: BlobStore) -> None:
    data = b"staged only"
    await store.start_upload("u-staged")
    await store.append_upload("u-staged", 0, stream(data))
    assert await store.stat(digest_of(data)) is None


async def test_appends_accumulate_across_calls(store: BlobStore) -> None:
    parts = [os.urandom(1000), os.urandom(2000), os.urandom(5)]
    await store.start_upload("u-chunks")
    offset = 0
    for part in parts:
        offset = await store.append_upload("u-chunks", offset, stream(part[:400], part[400:]))
    assert offset == sum(len(p) for p in parts)
    assert await collect(store.read_upload("u-chunks", offset)) == b"".join(parts)


async def test_append_discards_bytes_past_offset(store: BlobStore) -> None:
    """Bytes written by an append whose metadata update never happened are overwritten."""
    await store.start_upload("u-retry")
    await store.append_upload("u-retry", 0, stream(b"good"))
    await store.append_upload("u-retry", 4, stream(b"LOST-BYTES"))
    size = await store.append_upload("u-retry", 4, stream(b"!"))
    assert size == 5
    digest = digest_of(b"good!")
    await store.commit_upload("u-retry", size, digest)
    assert await collect(store.read(digest)) == b"good!"


async def test_append_beyond_staged_size_fails(store: BlobStore) -> None:
    await store.start_upload("u-gap")
    with pytest.raises(UploadMissing):
        await store.append_upload("u-gap", 10, stream(b"x"))


async def test_append_to_unknown_upload_fails(store: BlobStore) -> None:
    with pytest.raises(UploadMissing):
        await store.append_upload("never-started", 0, stream(b"x"))


async def test_commit_of_existing_blob_keeps_it_and_drops_upload(store: BlobStore) -> None:
    data = b"same bytes twice"
    digest = await put(store, data, "u-a")
    await put(store, data, "u-b")
    assert await collect(store.read(digest)) == data
    with pytest.raises(UploadMissing):
        await collect(store.read_upload("u-b", len(data)))


async def test_cancel_removes_staged_bytes(store: BlobStore) -> None:
    await store.start_upload("u-cancel")
    await store.append_upload("u-cancel", 0, stream(b"abc"))
    await store.cancel_upload("u-cancel")
    with pytest.raises(UploadMissing):
        await store.append_upload("u-cancel", 0, stream(b"x"))
    await store.cancel_upload("u-cancel")  # idempotent


async def test_delete(store: BlobStore) -> None:
    digest = await put(store, b"to delete")
    assert await store.delete(digest) is True
    assert await store.stat(digest) is None
    assert await store.delete(digest) is False


async def test_list_yields_every_blob(store: BlobStore) -> None:
    datas: Iterable[bytes] = [b"one", b"two", b"three"]
    digests = {await put(store, d, f"u-{i}") for i, d in enumerate(datas)}
    assert {d async for d in store.list()} == digests


async def test_sha512_blobs(store: BlobStore) -> None:
    data = b"sha512 content"
    digest = Digest("sha512", hashlib.sha512(data).hexdigest())
    await store.start_upload("u-512")
    size = await store.append_upload("u-512", 0, stream(data))
    await store.commit_upload("u-512", size, digest)
    assert await collect(store.read(digest)) == data


async def test_empty_blob(store: BlobStore) -> None:
    digest = await put(store, b"")
    stat = await store.stat(digest)
    assert stat is not None and stat.size == 0
    assert await collect(store.read(digest)) == b""


async def test_chunked_upload_commits(store: BlobStore) -> None:
    parts = [b"a", b"", os.urandom(100_000), b"b", b"c"]
    await store.start_upload("u-parts")
    offset = 0
    for part in parts:
        offset = await store.append_upload("u-parts", offset, stream(part))
    data = b"".join(parts)
    digest = digest_of(data)
    await store.commit_upload("u-parts", offset, digest)
    assert await collect(store.read(digest)) == data
    assert await collect(store.read(digest, 1, 5)) == data[1:6]
    assert await collect(store.read(digest, 3, 0)) == b""


async def test_unknown_upload_cannot_be_read_or_committed(store: BlobStore) -> None:
    with pytest.raises(UploadMissing):
        await collect(store.read_upload("never-started", 3))
    with pytest.raises(UploadMissing):
        await store.commit_upload("never-started", 3, digest_of(b"abc"))
    assert await store.stat(digest_of(b"abc")) is None


async def test_list_uploads_names_each_staged_upload_once(store: BlobStore) -> None:
    before = time.time() - 5  # object stores may round times to the second
    assert [u async for u in store.list_uploads()] == []
    await store.start_upload("u-empty")
    await store.start_upload("u-data")
    await store.append_upload("u-data", 0, stream(b"abc"))
    await store.append_upload("u-data", 3, stream(b"def"))
    await store.start_upload("u-done")
    await store.commit_upload(
        "u-done", await store.append_upload("u-done", 0, stream(b"x")), digest_of(b"x")
    )
    staged = {u.upload_id: u.modified async for u in store.list_uploads()}
    assert set(staged) == {"u-empty", "u-data"}
    assert all(before <= modified <= time.time() + 5 for modified in staged.values())
    await store.cancel_upload("u-data")
    assert [u.upload_id async for u in store.list_uploads()] == ["u-empty"]


async def test_check_upload_sees_whether_the_bytes_are_staged(store: BlobStore) -> None:
    await store.start_upload("u-check")
    await store.check_upload("u-check", 0)
    await store.append_upload("u-check", 0, stream(b"abcdef"))
    await store.check_upload("u-check", 6)
    with pytest.raises(UploadMissing):
        await store.check_upload("u-check", 7)  # fewer bytes staged than the session says
    await store.commit_upload("u-check", 6, digest_of(b"abcdef"))
    with pytest.raises(UploadMissing):
        await store.check_upload("u-check", 6)
    await store.start_upload("u-cancelled")
    await store.cancel_upload("u-cancelled")
    with pytest.raises(UploadMissing):
        await store.check_upload("u-cancelled", 0)
