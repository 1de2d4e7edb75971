"""S3 driver behaviour beyond the contract, against a real SeaweedFS: multipart streaming,
the chunk-object upload design, presigned redirects, outages and memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest

from cargobay.errors import Unavailable
from cargobay.registry.digest import Digest
from cargobay.storage.base import UploadMissing
from cargobay.storage.s3 import S3BlobStore
from tests.services.seaweedfs import SeaweedFS
from tests.storage.conftest import s3_store
from tests.storage.test_contract import collect, digest_of, put, stream

MiB = 1 << 20


@pytest.fixture
async def s3(seaweedfs: SeaweedFS) -> AsyncIterator[S3BlobStore]:
    store = s3_store(seaweedfs, part_size_mib=5)
    yield store
    await store.close()


def blocks(count: int, size: int = MiB, seed: int = 0) -> Iterator[bytes]:
    """`count` distinct blocks, generated one at a time, the same for the same seed."""
    base = random.Random(seed).randbytes(size)
    for index in range(count):
        yield (seed * 1_000_003 + index).to_bytes(16, "big") + base[16:]


async def agen(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def sha256_of(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


async def staged_keys(store: S3BlobStore, upload_id: str) -> list[str]:
    pages = obstore.list(store._store, store._upload_dir(upload_id))
    return [meta["path"] async for page in pages for meta in page]


async def test_streamed_upload_of_several_parts_reads_back(s3: S3BlobStore) -> None:
    expected = hashlib.sha256()
    for block in blocks(12, seed=1):
        expected.update(block)
    digest = Digest("sha256", expected.hexdigest())
    await s3.start_upload("big")
    size = await s3.append_upload("big", 0, agen(blocks(12, seed=1)))  # 3 parts of 5 MiB
    assert size == 12 * MiB
    assert await sha256_of(s3.read_upload("big", size)) == (digest.encoded, size)
    await s3.commit_upload("big", size, digest)
    assert await sha256_of(s3.read(digest)) == (digest.encoded, size)
    assert (
        await collect(s3.read(digest, 5 * MiB - 3, 6))
        == b"".join(blocks(12, seed=1))[5 * MiB - 3 : 5 * MiB + 3]
    )
    assert await staged_keys(s3, "big") == []


async def test_many_appends_of_all_sizes_then_commit(s3: S3BlobStore) -> None:
    parts = [b"a", b"b", os.urandom(5 * MiB + 3), b"c", os.urandom(700_000), b"", b"d"]
    await s3.start_upload("chunks")
    offset = 0
    for part in parts:
        offset = await s3.append_upload("chunks", offset, stream(part[:1000], part[1000:]))
    data = b"".join(parts)
    assert offset == len(data)
    assert len(await staged_keys(s3, "chunks")) == 7  # the marker + a chunk per non-empty part
    digest = await _commit(s3, "chunks", data)
    assert await collect(s3.read(digest)) == data
    assert await collect(s3.read(digest, 2, 10)) == data[2:12]
    assert await staged_keys(s3, "chunks") == []


async def test_an_append_longer_than_10000_parts_spans_several_objects(
    s3: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 allows 10,000 parts per object: past that an append continues in a new chunk object
    (here with the limit lowered to 2 parts of 5 MiB, so 10 MiB per object)."""
    monkeypatch.setattr("cargobay.storage.s3.MAX_PARTS", 2)
    data = b"".join(blocks(23, seed=3))
    await s3.start_upload("long")
    pieces = [data[i : i + 777_777] for i in range(0, len(data), 777_777)]
    assert await s3.append_upload("long", 0, stream(*pieces)) == len(data)
    assert len(await staged_keys(s3, "long")) == 1 + 3  # marker + 10 + 10 + 3 MiB
    assert await collect(s3.read_upload("long", len(data))) == data
    digest = await _commit(s3, "long", data)
    assert await sha256_of(s3.read(digest)) == (digest.encoded, len(data))


async def _commit(store: S3BlobStore, upload_id: str, data: bytes) -> Digest:
    digest = digest_of(data)
    await store.commit_upload(upload_id, len(data), digest)
    stat = await store.stat(digest)
    assert stat is not None and stat.size == len(data)
    return digest


async def test_stale_chunks_past_the_recorded_offset_are_ignored(s3: S3BlobStore) -> None:
    """Appends that died after writing their chunk leave objects at or past the offset the
    metadata recorded; the next append and the commit go by the recorded offset."""
    await s3.start_upload("stale")
    size = await s3.append_upload("stale", 0, stream(b"abc"))
    await obstore.put_async(s3._store, s3._chunk_key("stale", 3), b"LOST")
    await obstore.put_async(s3._store, s3._chunk_key("stale", 4), b"MORE LOST")
    await obstore.put_async(s3._store, s3._chunk_key("stale", 40), b"FAR AWAY")
    size = await s3.append_upload("stale", 3, stream(b"de"))
    assert size == 5
    assert await collect(s3.read_upload("stale", size)) == b"abcde"
    digest = await _commit(s3, "stale", b"abcde")
    assert await collect(s3.read(digest)) == b"abcde"


async def test_commit_needs_every_chunk(s3: S3BlobStore) -> None:
    await s3.start_upload("gap")
    offset = await s3.append_upload("gap", 0, stream(b"one"))
    offset = await s3.append_upload("gap", offset, stream(b"two"))
    offset = await s3.append_upload("gap", offset, stream(b"three"))
    await obstore.delete_async(s3._store, s3._chunk_key("gap", 3))
    with pytest.raises(UploadMissing):
        await s3.commit_upload("gap", offset, digest_of(b"onetwothree"))
    with pytest.raises(UploadMissing):
        await collect(s3.read_upload("gap", offset))
    assert await s3.stat(digest_of(b"onetwothree")) is None


async def test_presigned_redirect_url_serves_the_blob_and_ranges(s3: S3BlobStore) -> None:
    data = os.urandom(100_000)
    digest = await put(s3, data)
    url = await s3.url_for(digest)
    assert url is not None and "X-Amz-Signature=" in url
    async with httpx.AsyncClient(timeout=30) as client:
        whole = await client.get(url)
        assert whole.status_code == 200 and whole.content == data
        part = await client.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        tampered = await client.get(url.replace(digest.encoded[:8], "0" * 8, 1))
        assert tampered.status_code == 403


async def test_redirect_off_gives_no_url(seaweedfs: SeaweedFS) -> None:
    store = s3_store(seaweedfs, redirect=False)
    assert await store.url_for(await put(store, b"streamed")) is None


def test_endpoint_styles() -> None:
    """Presigning needs no server: the URL shows how the bucket is addressed."""
    keys = {"access_key_id": "AKID", "secret_access_key": "secret", "region": "eu-west-1"}
    digest = digest_of(b"x")
    key = f"p/blobs/sha256/{digest.encoded[:2]}/{digest.encoded}?"

    def url(**options: Any) -> str:
        store = S3BlobStore("bkt", prefix="/p/", **keys, **options)
        return asyncio.run(store.url_for(digest)) or ""

    assert url().startswith(f"https://bkt.s3.eu-west-1.amazonaws.com/{key}")
    assert url(endpoint="http://127.0.0.1:9000", path_style=True).startswith(
        f"http://127.0.0.1:9000/bkt/{key}"
    )
    assert url(endpoint="https://s3.example.com").startswith(f"https://bkt.s3.example.com/{key}")
    assert "X-Amz-Expires=60&" in url(redirect_expiry_seconds=60)
    with pytest.raises(ValueError):
        S3BlobStore("bkt", part_size_mib=4)


async def test_listing_crosses_pages(s3: S3BlobStore) -> None:
    """S3 lists 1,000 keys a page; blob keys are written directly, the listing parses keys."""
    digests = {digest_of(str(i).encode()) for i in range(1100)}
    limit = asyncio.Semaphore(32)

    async def write(digest: Digest) -> None:
        async with limit:
            await obstore.put_async(s3._store, s3._blob_key(digest), b"")

    await asyncio.gather(*(write(d) for d in digests))
    await obstore.put_async(s3._store, s3._root + "blobs/sha256/zz/not-a-digest", b"")
    assert {d async for d in s3.list()} == digests


async def test_outage_raises_unavailable_then_recovers(tmp_path: Path) -> None:
    server = SeaweedFS(tmp_path / "seaweedfs").start()
    try:
        store = s3_store(server)
        digest = await put(store, b"survives the outage")
        await store.start_upload("during")
        size = await store.append_upload("during", 0, stream(b"before "))
        server.stop()

        operations: dict[str, Callable[[], Awaitable[object]]] = {
            "stat": lambda: store.stat(digest),
            "read": lambda: collect(store.read(digest)),
            "delete": lambda: store.delete(digest),
            "list": lambda: collect_list(store),
            "start": lambda: store.start_upload("new"),
            "append": lambda: store.append_upload("during", size, stream(b"x")),
            "read_upload": lambda: collect(store.read_upload("during", size)),
            "commit": lambda: store.commit_upload("during", size, digest_of(b"before ")),
            "cancel": lambda: store.cancel_upload("during"),
        }
        for name, operation in operations.items():
            started = time.monotonic()
            with pytest.raises(Unavailable) as raised:
                await operation()
            assert time.monotonic() - started < 10, name
            assert raised.value.status == 503

        server.start()
        assert await collect(store.read(digest)) == b"survives the outage"
        size = await store.append_upload("during", size, stream(b"and after"))
        assert await collect(store.read_upload("during", size)) == b"before and after"
    finally:
        server.stop()


async def collect_list(store: S3BlobStore) -> list[Digest]:
    return [d async for d in store.list()]


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(180)
async def test_memory_stays_bounded_while_streaming_256_mib(seaweedfs: SeaweedFS) -> None:
    """Peak RSS (VmHWM, reset first) while a 256 MiB upload streams in and back out."""
    store = s3_store(seaweedfs)  # 8 MiB parts
    count = 256
    expected = hashlib.sha256()
    for block in blocks(count, seed=2):
        expected.update(block)
    digest = Digest("sha256", expected.hexdigest())
    await store.start_upload("mem")

    _reset_peak_rss()
    baseline = _rss("VmRSS")
    size = await store.append_upload("mem", 0, agen(blocks(count, seed=2)))
    await store.commit_upload("mem", size, digest)
    assert await sha256_of(store.read(digest)) == (digest.encoded, count * MiB)
    growth = _rss("VmHWM") - baseline
    assert growth < 100 * MiB, f"RSS grew by {growth / MiB:.0f} MiB"
