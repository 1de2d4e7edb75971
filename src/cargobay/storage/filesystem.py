"""Blob store on a local filesystem.

Layout under the root:

    blobs/<algorithm>/<first two hex digits>/<encoded>   complete, verified blobs
    uploads/<upload id>                                  staged bytes of uploads in progress

Both live on one filesystem so that committing an upload is a rename. A committed blob was
fsynced before the rename and its directory after it. Small writes of request bodies go straight
to the page cache from the event loop (a thread hop costs more than the write); fsync and bulk
reads run in the default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path

from cargobay.errors import RegistryError, StorageFull, Unavailable
from cargobay.registry.digest import Digest
from cargobay.storage.base import READ_CHUNK, BlobStat, BlobStore, StagedUpload, UploadMissing


class FilesystemBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)

    async def ping(self) -> None:
        for folder in (self._blobs, self._uploads):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise Unavailable(f"blob storage folder {folder} is missing or not writable")

    def _blob_path(self, digest: Digest) -> str:
        return f"{self._blobs}/{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"

    def _upload_path(self, upload_id: str) -> str:
        return f"{self._uploads}/{upload_id}"

    async def stat(self, digest: Digest) -> BlobStat | None:
        try:
            return BlobStat(os.stat(self._blob_path(digest)).st_size)
        except FileNotFoundError:
            return None

    def local_path(self, digest: Digest) -> str | None:
        return self._blob_path(digest)

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in _read_file(self._blob_path(digest), offset, length):
            yield chunk

    async def delete(self, digest: Digest) -> bool:
        try:
            os.unlink(self._blob_path(digest))
            return True
        except FileNotFoundError:
            return False

    async def list(self) -> AsyncIterator[Digest]:
        """Every blob file; other names (an editor's backup, NFS's .nfsXXXX) are not blobs."""
        for algorithm_dir in sorted(self._blobs.iterdir()):
            for prefix_dir in sorted(algorithm_dir.iterdir()):
                for blob in sorted(prefix_dir.iterdir()):
                    try:
                        digest = Digest.parse(f"{algorithm_dir.name}:{blob.name}")
                    except RegistryError:
                        continue
                    if digest.encoded.startswith(prefix_dir.name):
                        yield digest

    async def start_upload(self, upload_id: str) -> None:
        with _space():
            fd = os.open(self._upload_path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)

    async def append_upload(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        try:
            fd = os.open(self._upload_path(upload_id), os.O_WRONLY)
        except FileNotFoundError:
            raise UploadMissing(upload_id) from None
        start = offset
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise UploadMissing(f"{upload_id}: {size} bytes staged, {offset} expected")
            if size > offset:  # left by an append that failed after writing
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            with _space():
                async for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    offset += len(chunk)
            return offset
        except BaseException:
            # The session stays at `start`: give back the space at once (a full disk).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        finally:
            os.close(fd)

    async def check_upload(self, upload_id: str, size: int) -> None:
        try:
            staged = os.stat(self._upload_path(upload_id)).st_size
        except FileNotFoundError:
            raise UploadMissing(upload_id) from None
        if staged < size:
            raise UploadMissing(f"{upload_id}: {staged} bytes staged, {size} expected")

    async def read_upload(self, upload_id: str, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in _read_file(self._upload_path(upload_id), 0, size):
                yield chunk
        except FileNotFoundError:
            raise UploadMissing(upload_id) from None

    async def commit_upload(self, upload_id: str, size: int, digest: Digest) -> None:
        source = self._upload_path(upload_id)
        target = self._blob_path(digest)
        with _space():
            await asyncio.get_running_loop().run_in_executor(None, _commit, source, size, target)

    async def cancel_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._upload_path(upload_id))

    async def list_uploads(self) -> AsyncIterator[StagedUpload]:
        with os.scandir(self._uploads) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # committed or cancelled meanwhile
                    yield StagedUpload(entry.name, entry.stat().st_mtime)


@contextlib.contextmanager
def _space() -> Iterator[None]:
    """A full disk or quota is StorageFull (507), not an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"no space left for blob storage: {exc.strerror}") from None
        raise


def _commit(source: str, size: int, target: str) -> None:
    """Runs in a thread: fsync the staged file, then rename it into place."""
    if os.path.exists(target):
        # Renaming over an existing blob would make ext4 write the whole file back again.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(source)
        return
    try:
        fd = os.open(source, os.O_WRONLY)
    except FileNotFoundError:
        raise UploadMissing(source) from None
    try:
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    os.rename(source, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _read_file(path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(path, "rb", buffering=0) as f:  # noqa: ASYNC230 - reads below go to a thread
        f.seek(offset)
        remaining = length if length is not None else -1
        while remaining != 0:
            want = READ_CHUNK if remaining < 0 else min(READ_CHUNK, remaining)
            chunk = await loop.run_in_executor(None, f.read, want)
            if not chunk:
                break
            if remaining > 0:
                remaining -= len(chunk)
            yield chunk
