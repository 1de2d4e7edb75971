"""The blob store interface: content-addressed blobs plus resumable upload staging.

A blob store holds bytes only. Which repository may see a blob, and everything else about it, is
the metadata store's business. Every driver (filesystem, S3) passes the same contract
suite in `tests/storage/`.

Uploads: `start_upload` creates an empty staging object; `append_upload` adds bytes at a given
offset (the offset recorded in metadata is the truth: bytes past it, left by an append that died
half-way, are discarded); `commit_upload` makes the staged bytes visible under their digest
atomically, and is a no-op for the bytes when the blob already exists. A blob is never visible
before it is complete and verified by the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from cargobay.registry.digest import Digest

READ_CHUNK = 1 << 20


class UploadMissing(Exception):
    """The staging object of an upload is gone, or shorter than the metadata says."""


@dataclass(frozen=True, slots=True)
class BlobStat:
    size: int


@dataclass(frozen=True)
class StagedUpload:
    upload_id: str
    modified: float  # seconds since the epoch of the last write


class BlobStore(ABC):
    @abstractmethod
    async def stat(self, digest: Digest) -> BlobStat | None: ...

    @abstractmethod
    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a blob's bytes from `offset`, `length` bytes or to the end."""

    def local_path(self, digest: Digest) -> str | None:
        """A path on this machine to serve the blob from with sendfile, if the driver has one."""
        return None

    async def url_for(self, digest: Digest) -> str | None:
        """A URL (e.g. presigned) the client may be redirected to instead of streaming."""
        return None

    @abstractmethod
    async def delete(self, digest: Digest) -> bool: ...

    @abstractmethod
    def list(self) -> AsyncIterator[Digest]: ...

    @abstractmethod
    async def start_upload(self, upload_id: str) -> None: ...

    @abstractmethod
    async def append_upload(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Write `chunks` at `offset` and return the new size; raise UploadMissing if the
        staging object is gone. Callers hold the session (MetadataStore.lock_upload): the
        store does not guard against two appends to one upload."""

    @abstractmethod
    async def check_upload(self, upload_id: str, size: int) -> None:
        """Raise UploadMissing unless the first `size` bytes of the upload are staged.
        (Committing drops the staging object before the metadata records the blob: a crash
        in between leaves a session whose bytes are gone.)"""

    @abstractmethod
    def read_upload(self, upload_id: str, size: int) -> AsyncIterator[bytes]:
        """Stream the first `size` staged bytes (used to re-hash when no hash state was kept)."""

    @abstractmethod
    async def commit_upload(self, upload_id: str, size: int, digest: Digest) -> None:
        """Make the first `size` staged bytes the blob `digest` and drop the staging object."""

    @abstractmethod
    async def cancel_upload(self, upload_id: str) -> None: ...

    @abstractmethod
    def list_uploads(self) -> AsyncIterator[StagedUpload]:
        """Every upload with staged data, whether or not metadata still knows it (a crash
        between the two stores leaves such orphans; upload expiry removes them)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise cargobay.errors.Unavailable unless the store can be used (for /readyz)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""
