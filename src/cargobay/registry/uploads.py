"""Blob uploads: sessions, chunks, resumable hashing, verification and commit.

An upload session is a row in the metadata store (repository, digest algorithm, bytes received,
serialized hash state) plus a staging object in the blob store. Any worker can continue any
session: it restores the hash state saved by the previous request, appends, and saves the new
state. The final PUT verifies the digest before the blob becomes visible; on a mismatch the
session and its bytes are dropped and nothing is stored.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from cargobay.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
)
from cargobay.metadata.base import MetadataStore, UploadLocked, UploadRecord
from cargobay.registry.digest import (
    DEFAULT_ALGORITHM,
    Digest,
    Hasher,
    check_algorithm,
    finish,
    new_hasher,
    restore_hasher,
)
from cargobay.storage.base import BlobStore, UploadMissing

# The spec's `^[0-9]+-[0-9]+$`, also with the `bytes=` or `bytes ` prefix and `/total` suffix
# some clients send. ASCII digits only: int() would also take other scripts' digits.
T = TypeVar("T")
EXPIRY_CONCURRENCY = 16  # uploads removed at once: object store deletes are round trips
# Held by the process expiring uploads (an upload lock on an id no upload can have).
_EXPIRY_LOCK = str(uuid.UUID(int=0))
_CONTENT_RANGE = re.compile(
    r"(?:bytes[= ])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?", re.ASCII
)


@dataclass(frozen=True, slots=True)
class ChunkRange:
    """A request's Content-Range: first and last byte, inclusive."""

    start: int
    end: int

    @classmethod
    def parse(cls, value: str) -> ChunkRange:
        match = _CONTENT_RANGE.fullmatch(value.strip())
        if match is None or int(match[2]) < int(match[1]):
            raise RangeInvalid(f"invalid Content-Range {value!r}: expected START-END")
        return cls(int(match[1]), int(match[2]))

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def range_header(size: int) -> str:
    """The `Range` of an upload: the bytes received, inclusive (`0-0` when empty, as
    distribution answers and clients expect)."""
    return f"0-{max(size - 1, 0)}"


class Uploads:
    def __init__(self, blobs: BlobStore, metadata: MetadataStore) -> None:
        self.blobs = blobs
        self.metadata = metadata

    async def start(self, repository: str, algorithm: str | None = None) -> UploadRecord:
        upload = UploadRecord(
            id=str(uuid.uuid4()),
            repository=repository,
            algorithm=check_algorithm(algorithm or DEFAULT_ALGORITHM),
        )
        await self.blobs.start_upload(upload.id)
        await self.metadata.create_upload(upload)
        return upload

    async def status(self, repository: str, upload_id: str) -> UploadRecord:
        """The session, if it can still be continued: its bytes are staged."""
        upload = await self.get(repository, upload_id)
        try:
            await self.blobs.check_upload(upload.id, upload.size)
        except UploadMissing:
            raise BlobUploadUnknown(detail={"upload": upload_id}) from None
        return upload

    async def get(self, repository: str, upload_id: str) -> UploadRecord:
        upload = None
        if _is_uuid(upload_id):
            upload = await self.metadata.get_upload(upload_id)
        if upload is None or upload.repository != repository:
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return upload

    @asynccontextmanager
    async def session(self, repository: str, upload_id: str) -> AsyncIterator[UploadRecord]:
        """Hold an upload for one request that writes to it, with its state as of now."""
        upload = await self.get(repository, upload_id)
        try:
            async with self.metadata.lock_upload(upload.id):
                # Read again under the lock: the request that held it may have moved it on.
                yield await self.get(repository, upload_id)
        except UploadLocked:
            raise _conflict(upload, "another request is writing to this upload") from None

    async def append(
        self,
        upload: UploadRecord,
        chunks: AsyncIterable[bytes],
        chunk_range: ChunkRange | None,
        content_length: int | None,
    ) -> UploadRecord:
        """Append a PATCH body and save the new size and hash state (within `session`)."""
        hasher = await self._hasher(upload, upload.algorithm)
        size = await self._write(upload, chunks, chunk_range, content_length, hasher)
        state = hasher.serialize()
        if not await self.metadata.update_upload(upload.id, upload.size, size, state):
            raise _conflict(upload)
        upload.size, upload.hash_state, upload.updated_at = size, state, time.time()
        return upload

    async def complete(
        self,
        upload: UploadRecord,
        digest_param: str | None,
        chunks: AsyncIterable[bytes] | None,
        chunk_range: ChunkRange | None,
        content_length: int | None,
    ) -> tuple[Digest, int]:
        """The final PUT (within `session`, or on a fresh upload): append the body if any,
        verify the digest, commit, link the blob."""
        if not digest_param:
            raise DigestInvalid("the digest query parameter is required to complete an upload")
        digest = Digest.parse(digest_param)
        hasher = await self._hasher(upload, digest.algorithm)
        size = upload.size
        if chunks is not None:
            size = await self._write(upload, chunks, chunk_range, content_length, hasher)
        actual = finish(digest.algorithm, hasher)
        if actual != digest:
            await self.cancel(upload)
            raise DigestInvalid(
                f"upload content has digest {actual}, not {digest}",
                detail={"expected": str(digest), "actual": str(actual)},
            )
        # Held until the metadata records the blob: garbage collection deletes a blob's bytes
        # under the same lock, so it never deletes bytes this upload found in place (and
        # therefore did not write) or just wrote.
        async with self.metadata.lock_blob(str(digest)):
            try:
                await self.blobs.commit_upload(upload.id, size, digest)
            except UploadMissing:
                raise await self._staging_lost(upload) from None
            # A crash here leaves the session without its staged bytes (the blob has them):
            # `status` then answers that the session is unknown, as the next PATCH or PUT does.
            await self.metadata.complete_upload(upload, str(digest), size)
        return digest, size

    async def cancel(self, upload: UploadRecord) -> None:
        await self.metadata.delete_upload(upload.id)
        await self.blobs.cancel_upload(upload.id)

    async def expire(self, max_age_seconds: float) -> int:
        """Remove sessions untouched for `max_age_seconds`, and staged data that no session
        owns (left by a crash between the two stores) once it is that old too; returns how
        many uploads were removed. One process at a time (any other returns 0 at once), and
        never an upload that a request holds right now."""
        try:
            async with self.metadata.lock_upload(_EXPIRY_LOCK):
                return await self._expire(time.time() - max_age_seconds)
        except UploadLocked:
            return 0

    async def _expire(self, cutoff: float) -> int:
        async def session(upload: UploadRecord) -> bool:
            try:
                async with self.metadata.lock_upload(upload.id):
                    deleted = await self.metadata.delete_upload(upload.id)
                    await self.blobs.cancel_upload(upload.id)
                    return deleted
            except UploadLocked:
                return False  # in use after all: not abandoned

        async def orphan(upload_id: str) -> bool:
            # Sessions write the blob store first (start_upload), so an old staged upload
            # with a session is one in use, or a stale one that was just removed.
            if _is_uuid(upload_id) and await self.metadata.get_upload(upload_id) is not None:
                return False
            await self.blobs.cancel_upload(upload_id)
            return True

        stale = await self.metadata.list_uploads_older_than(cutoff)
        removed = sum(await _bounded(EXPIRY_CONCURRENCY, map(session, stale)))
        orphans = [u.upload_id async for u in self.blobs.list_uploads() if u.modified < cutoff]
        return removed + sum(await _bounded(EXPIRY_CONCURRENCY, map(orphan, orphans)))

    async def _hasher(self, upload: UploadRecord, algorithm: str) -> Hasher:
        if upload.algorithm == algorithm and upload.hash_state is not None:
            return restore_hasher(algorithm, upload.hash_state)
        hasher = new_hasher(algorithm)
        if upload.size:
            # No saved state for this algorithm: hash what was received so far once more.
            try:
                async for chunk in self.blobs.read_upload(upload.id, upload.size):
                    hasher.update(chunk)
            except UploadMissing:
                raise await self._staging_lost(upload) from None
        return hasher

    async def _write(
        self,
        upload: UploadRecord,
        chunks: AsyncIterable[bytes],
        chunk_range: ChunkRange | None,
        content_length: int | None,
        hasher: Hasher,
    ) -> int:
        if chunk_range is not None:
            if chunk_range.start != upload.size:
                raise _conflict(upload)
            if content_length is not None and content_length != chunk_range.length:
                raise RangeInvalid(
                    f"Content-Range covers {chunk_range.length} bytes,"
                    f" Content-Length says {content_length}",
                    headers=_headers(upload),
                )
        try:
            size = await self.blobs.append_upload(upload.id, upload.size, _hashed(chunks, hasher))
        except UploadMissing:
            raise await self._staging_lost(upload) from None
        if chunk_range is not None and size != chunk_range.end + 1:
            raise BlobUploadInvalid(
                f"received {size - upload.size} bytes, Content-Range announced"
                f" {chunk_range.length}",
                status=416,
                headers=_headers(upload),
            )
        return size

    async def _staging_lost(self, upload: UploadRecord) -> BlobUploadUnknown:
        """The session's staged bytes are gone (a crash after its blob was committed, before
        the metadata recorded it; or a cancel meanwhile): the session goes too, and is
        unknown from now on rather than promising a resume that no request can do."""
        await self.cancel(upload)
        return BlobUploadUnknown(detail={"upload": upload.id})


async def _hashed(chunks: AsyncIterable[bytes], hasher: Hasher) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def _headers(upload: UploadRecord) -> dict[str, str]:
    return {
        "Location": upload_location(upload),
        "Range": range_header(upload.size),
        "Docker-Upload-UUID": upload.id,
    }


def _conflict(upload: UploadRecord, message: str | None = None) -> RangeInvalid:
    return RangeInvalid(message, headers=_headers(upload))


def upload_location(upload: UploadRecord) -> str:
    return f"/v2/{upload.repository}/blobs/uploads/{upload.id}"


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def _bounded(limit: int, calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await `calls`, at most `limit` at a time."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    return await asyncio.gather(*map(one, calls))
