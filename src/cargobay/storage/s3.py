"""Blob store on S3 (or any S3-compatible store), through obstore.

Layout under the bucket and optional prefix:

    <prefix>/blobs/<algorithm>/<first two hex digits>/<encoded>   complete, verified blobs
    <prefix>/uploads/<upload id>/started                           marker: the upload exists
    <prefix>/uploads/<upload id>/<offset, 20 digits>               one object per append

Uploads keep no state in the process: another worker or instance sharing only the bucket and
the metadata store can do the next append. S3 objects cannot be appended to, and obstore has no
explicit multipart-upload API (no UploadPart per PATCH, no ListParts), so each append writes its
bytes as one object named by the offset they start at (a streamed multipart PUT when larger than
a part, bounded memory). The offset recorded in metadata is the truth: chunk objects at or past it
were left by appends that died after writing, and are deleted or overwritten. The staged upload is
the contiguous chain of chunks from offset 0.

Commit costs: an upload that arrived as one chunk (a monolithic or single-PATCH push, what most
clients do) becomes the blob by a server-side copy; a multi-chunk upload, or one over the 5 GiB
limit of CopyObject, is streamed through the registry once more into a multipart PUT. Both are
atomic in S3, so a blob key never holds partial content. Then the staging objects are deleted.

Errors: connection failures, timeouts and 5xx answers (after obstore's few, bounded retries)
raise `Unavailable` (503); a missing object is None, False, FileNotFoundError (read) or
UploadMissing, as the interface says.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from cargobay.errors import DigestInvalid, Unavailable
from cargobay.registry.digest import Digest
from cargobay.storage.base import READ_CHUNK, BlobStat, BlobStore, StagedUpload, UploadMissing

if TYPE_CHECKING:
    from obstore import GetOptions, ObjectMeta
    from obstore.store import ClientConfig, RetryConfig, S3Config

log = logging.getLogger("cargobay.storage")

MiB = 1 << 20
MAX_COPY_SIZE = 5 << 30  # S3 CopyObject limit
MIN_PART_SIZE = 5 * MiB  # S3's minimum, except for the last part
MAX_PARTS = 10_000  # S3's maximum per object
# Parts in flight per multipart PUT: memory per upload is about part size x (this + 1).
PART_CONCURRENCY = 2
STARTED = "started"
OFFSET_DIGITS = 20

# A stopped store refuses connections: fail within about a second, not after minutes of retries.
# A stalled one is caught by read_timeout (it restarts with every read). The overall timeout is
# long because it also runs while a slow client consumes a streamed GET.
CLIENT_OPTIONS: ClientConfig = {"connect_timeout": "2s", "read_timeout": "20s", "timeout": "1h"}
COPY_TIMEOUT = "30m"
RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=5),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=1),
        "base": 2,
    },
}


class _Source:
    """A byte stream read in pieces of at most a given size (a request body may arrive in
    pieces of any size)."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._iterator = aiter(chunks)
        self._pending = b""
        self.exhausted = False

    async def take(self, limit: int, at_least: int | None = None) -> bytes:
        """Up to `limit` bytes: gathered until `at_least` (default: `limit`) are buffered or
        the stream ends. b"" only at the end."""
        wanted = min(limit, at_least or limit)
        pieces, size = [self._pending], len(self._pending)
        while size < wanted and not self.exhausted:
            try:
                data = await anext(self._iterator)
            except StopAsyncIteration:
                self.exhausted = True
                break
            pieces.append(data)
            size += len(data)
        buffered = b"".join(pieces)
        self._pending = buffered[limit:]
        if not self._pending and not self.exhausted:
            await self._peek()
        return buffered[:limit]

    async def _peek(self) -> None:
        """Find out whether the stream has ended, so that callers need not write an empty
        object to learn it."""
        try:
            self._pending = await anext(self._iterator)
        except StopAsyncIteration:
            self.exhausted = True


@dataclass(frozen=True, slots=True)
class _Chunk:
    key: str
    offset: int
    size: int


class S3BlobStore(BlobStore):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        prefix: str = "",
        path_style: bool = False,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        redirect: bool = True,
        redirect_expiry_seconds: int = 1200,
        part_size_mib: int = 8,
    ) -> None:
        if part_size_mib * MiB < MIN_PART_SIZE:
            raise ValueError(f"S3 parts are at least 5 MiB, not {part_size_mib} MiB")
        self.bucket = bucket
        self._root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._redirect_expiry = timedelta(seconds=redirect_expiry_seconds) if redirect else None
        self._part_size = part_size_mib * MiB
        self._static_keys = bool(access_key_id and secret_access_key)
        config: S3Config = {"virtual_hosted_style_request": not path_style}
        if endpoint:
            # obstore wants the bucket in a virtual-hosted endpoint: https://bucket.host
            config["endpoint"] = endpoint if path_style else _with_bucket(endpoint, bucket)
        if region:
            config["region"] = region
        # Unset credentials: obstore's AWS chain (AWS_* variables, web identity, ECS, IMDS).
        if access_key_id:
            config["access_key_id"] = access_key_id
        if secret_access_key:
            config["secret_access_key"] = secret_access_key
        if session_token:
            config["session_token"] = session_token
        options = CLIENT_OPTIONS.copy()
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True
        # Building the store opens no connection and starts no thread, so it is safe before a
        # fork; obstore's runtime starts with the first request, and a process forked after
        # that hangs in obstore. Stores are built in the workers (server.py), after the fork.
        self._store = S3Store(bucket, config=config, client_options=options, retry_config=RETRY)
        # A server-side copy answers only when it is done: minutes for a multi-GiB blob.
        slow: ClientConfig = {**options, "read_timeout": COPY_TIMEOUT}
        self._copier = S3Store(bucket, config=config, client_options=slow, retry_config=RETRY)

    # -- keys ------------------------------------------------------------------------------
    def _blob_key(self, digest: Digest) -> str:
        return f"{self._root}blobs/{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"

    def _upload_dir(self, upload_id: str) -> str:
        return f"{self._root}uploads/{upload_id}/"

    def _chunk_key(self, upload_id: str, offset: int) -> str:
        return f"{self._upload_dir(upload_id)}{offset:0{OFFSET_DIGITS}d}"

    # -- blobs -----------------------------------------------------------------------------
    async def ping(self) -> None:
        with _unavailable("LIST bucket"):
            await anext(aiter(obstore.list(self._store, self._root or None, chunk_size=1)), None)

    async def stat(self, digest: Digest) -> BlobStat | None:
        with _unavailable("HEAD blob"):
            try:
                meta = await obstore.head_async(self._store, self._blob_key(digest))
            except FileNotFoundError:
                return None
        return BlobStat(meta["size"])

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in self._get(self._blob_key(digest), offset, length):
            yield chunk

    async def url_for(self, digest: Digest) -> str | None:
        if self._redirect_expiry is None:
            return None
        key = self._blob_key(digest)
        with _unavailable("presign"):
            if self._static_keys:
                # Pure computation with configured keys: 20 µs, where the round trip to
                # obstore's runtime (sign_async) costs 230 µs. Keys from the AWS chain may need
                # a request to refresh, which must not block the event loop.
                return obstore.sign(self._store, "GET", key, self._redirect_expiry)
            return await obstore.sign_async(self._store, "GET", key, self._redirect_expiry)

    async def delete(self, digest: Digest) -> bool:
        if await self.stat(digest) is None:  # S3 deletes answer the same either way
            return False
        with _unavailable("DELETE blob"):
            await obstore.delete_async(self._store, self._blob_key(digest))
        return True

    async def list(self) -> AsyncIterator[Digest]:
        blobs = f"{self._root}blobs/"
        pages = obstore.list(self._store, blobs, chunk_size=1000)
        while True:
            with _unavailable("LIST blobs"):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
            for meta in page:
                algorithm, _, rest = meta["path"].removeprefix(blobs).partition("/")
                try:
                    yield Digest.parse(f"{algorithm}:{rest.rpartition('/')[2]}")
                except DigestInvalid:
                    continue  # not a blob of ours

    # -- uploads ---------------------------------------------------------------------------
    async def start_upload(self, upload_id: str) -> None:
        with _unavailable("PUT upload marker"):
            await obstore.put_async(self._store, self._upload_dir(upload_id) + STARTED, b"")

    async def append_upload(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        staged = await self._staged(upload_id)
        _chain(upload_id, staged, offset, exact=True)
        stale = [c.key for c in staged if c.offset > offset]  # overwritten: c.offset == offset
        if stale:
            with _unavailable("DELETE stale chunks"):
                await obstore.delete_async(self._store, stale)
        # S3 allows 10,000 parts per object: a longer append becomes several chunk objects.
        source = _Source(chunks)
        position = offset
        while not source.exhausted:
            key = self._chunk_key(upload_id, position)
            position += await self._write_chunk(key, source, MAX_PARTS * self._part_size)
        return position

    async def _write_chunk(self, key: str, source: _Source, limit: int) -> int:
        """Write up to `limit` bytes of `source` to `key`; how many were written."""
        # Up to one part is buffered: a small append is one plain PUT, a larger one streams.
        head = await source.take(self._part_size)
        if len(head) < self._part_size or source.exhausted:
            if head:
                with _unavailable("PUT chunk"):
                    await obstore.put_async(self._store, key, head, use_multipart=False)
            return len(head)
        written = len(head)

        async def body() -> AsyncIterator[bytes]:
            nonlocal written
            yield head
            while written < limit and (data := await source.take(limit - written, READ_CHUNK)):
                written += len(data)
                yield data

        # An exception from the source (the client went away) aborts the multipart upload and
        # propagates unchanged; nothing is left at `key`.
        await self._put_stream(key, body(), "PUT chunk", self._part_size)
        return written

    async def check_upload(self, upload_id: str, size: int) -> None:
        _chain(upload_id, await self._staged(upload_id), size)

    async def read_upload(self, upload_id: str, size: int) -> AsyncIterator[bytes]:
        chain = _chain(upload_id, await self._staged(upload_id), size)
        async for data in self._concatenate(upload_id, chain):
            yield data

    async def commit_upload(self, upload_id: str, size: int, digest: Digest) -> None:
        target = self._blob_key(digest)
        if await self.stat(digest) is None:
            chain = _chain(upload_id, await self._staged(upload_id), size)
            if size == 0:
                with _unavailable("PUT blob"):
                    await obstore.put_async(self._store, target, b"")
            elif len(chain) == 1 and chain[0][0].size == size and size <= MAX_COPY_SIZE:
                with _unavailable("COPY chunk to blob"):
                    try:
                        await obstore.copy_async(self._copier, chain[0][0].key, target)
                    except FileNotFoundError:
                        raise UploadMissing(upload_id) from None
            else:
                part_size = max(self._part_size, -(-size // MAX_PARTS))
                body = self._concatenate(upload_id, chain)
                await self._put_stream(target, body, "PUT blob", part_size)
        await self.cancel_upload(upload_id)

    async def cancel_upload(self, upload_id: str) -> None:
        keys = [meta["path"] for meta in await self._upload_objects(upload_id)]
        if keys:
            with _unavailable("DELETE upload"):
                await obstore.delete_async(self._store, keys)

    async def list_uploads(self) -> AsyncIterator[StagedUpload]:
        # Keys are listed in order, so each upload's objects arrive together.
        uploads = f"{self._root}uploads/"
        pages = obstore.list(self._store, uploads, chunk_size=1000)
        current, modified = "", 0.0
        while True:
            with _unavailable("LIST uploads"):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    break
            for meta in page:
                upload_id = meta["path"].removeprefix(uploads).partition("/")[0]
                if upload_id != current:
                    if current:
                        yield StagedUpload(current, modified)
                    current, modified = upload_id, 0.0
                modified = max(modified, meta["last_modified"].timestamp())
        if current:
            yield StagedUpload(current, modified)

    # -- helpers ---------------------------------------------------------------------------
    async def _upload_objects(self, upload_id: str) -> Sequence[ObjectMeta]:
        with _unavailable("LIST upload"):
            pages = obstore.list(self._store, self._upload_dir(upload_id), chunk_size=1000)
            return [meta async for page in pages for meta in page]

    async def _staged(self, upload_id: str) -> Sequence[_Chunk]:
        """The upload's chunk objects by offset; UploadMissing without the start marker."""
        directory = self._upload_dir(upload_id)
        names = {
            meta["path"].removeprefix(directory): meta
            for meta in await self._upload_objects(upload_id)
        }
        if STARTED not in names:
            raise UploadMissing(upload_id)
        chunks = [
            _Chunk(meta["path"], int(name), meta["size"])
            for name, meta in names.items()
            if len(name) == OFFSET_DIGITS and name.isdigit()
        ]
        return sorted(chunks, key=lambda c: c.offset)

    async def _get(self, key: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        if length == 0:
            return
        options: GetOptions = {}
        if length is not None:
            options["range"] = (offset, offset + length)
        elif offset:
            options["range"] = {"offset": offset}
        with _unavailable("GET"):
            result = await obstore.get_async(self._store, key, options=options)
        stream = result.stream(min_chunk_size=READ_CHUNK)
        while True:
            with _unavailable("GET"):
                try:
                    data = await stream.__anext__()
                except StopAsyncIteration:
                    return
            yield data

    async def _concatenate(
        self, upload_id: str, chain: Sequence[tuple[_Chunk, int]]
    ) -> AsyncIterator[bytes]:
        try:
            for chunk, length in chain:
                async for data in self._get(chunk.key, 0, length):
                    yield data
        except FileNotFoundError:  # cancelled meanwhile
            raise UploadMissing(upload_id) from None

    async def _put_stream(
        self, key: str, body: AsyncIterator[bytes], action: str, part_size: int
    ) -> None:
        with _unavailable(action):
            await obstore.put_async(
                self._store, key, body, chunk_size=part_size, max_concurrency=PART_CONCURRENCY
            )


def _chain(
    upload_id: str, staged: Sequence[_Chunk], size: int, *, exact: bool = False
) -> list[tuple[_Chunk, int]]:
    """The chunks holding bytes [0, size), each with how many of its bytes count: contiguous
    from offset 0, the last one possibly longer than needed (unless `exact`, for appends,
    which must start where a chunk ends). Chunks past the chain are leftovers and ignored."""
    by_offset = {c.offset: c for c in staged}
    chain: list[tuple[_Chunk, int]] = []
    position = 0
    while position < size:
        chunk = by_offset.get(position)
        if chunk is None or chunk.size == 0:
            raise UploadMissing(f"{upload_id}: {position} bytes staged, {size} expected")
        length = min(chunk.size, size - position)
        if exact and length < chunk.size:
            raise UploadMissing(f"{upload_id}: offset {size} is inside the chunk at {position}")
        chain.append((chunk, length))
        position += length
    return chain


@contextlib.contextmanager
def _unavailable(action: str) -> Iterator[None]:
    """obstore errors (after its retries) become 503 UNAVAILABLE; details go to the log."""
    try:
        yield
    except ObstoreError as exc:
        log.warning("object store: %s failed: %s", action, str(exc).split("\n", 1)[0])
        raise Unavailable(f"the object store failed ({action}); retry later") from exc


def _with_bucket(endpoint: str, bucket: str) -> str:
    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(netloc=f"{bucket}.{parts.netloc}"))
