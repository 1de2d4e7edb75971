"""The metadata store interface: repositories, blob links, manifests, tags, referrers, uploads.

Everything the registry knows besides blob bytes lives here, so that any worker process (and,
with PostgreSQL, any instance) answers any request from the same state. Every implementation
passes the contract suite in `tests/metadata/`.

Blobs are global (stored once, `blobs`) and linked into repositories (`repository_blobs`); a
repository can read only the blobs linked into it. Manifests are kept whole (they are at most a
few MiB) with the fields the referrers API needs, and with the digests they reference so that
garbage collection and quotas can walk the graph later without parsing JSON.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass

from cargobay.errors import Unavailable

# Waiting for a blob lock: an upload holds it while the store commits the bytes, which for a
# large blob on S3 is a server-side copy of minutes (storage/s3.py allows it 30).
LOCK_WAIT_SECONDS = 1800.0
# Pull times are for retention policies, whose durations are hours or days: a pull within
# this many seconds of the recorded one is not written again.
PULL_TIME_PRECISION = 60.0


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    content: bytes
    artifact_type: str | None = None
    subject: str | None = None
    annotations: dict[str, str] | None = None
    # What the manifest points at; both must exist in the repository when it is stored.
    blob_references: tuple[str, ...] = ()
    manifest_references: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(slots=True)
class UploadRecord:
    id: str
    repository: str
    algorithm: str
    size: int = 0
    hash_state: bytes | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """A long-lived, revocable token (robot account). Only a hash of its secret is stored."""

    id: str
    name: str
    secret_hash: bytes
    # (repository glob, actions) pairs the token grants, e.g. ("team/*", ("pull",)).
    scopes: tuple[tuple[str, tuple[str, ...]], ...]
    created_at: float = 0.0
    revoked_at: float | None = None
    kind: str = "robot"  # or "refresh": a token server refresh token for user `name`


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Totals for metrics. Blobs count until garbage collection removes them, linked or not."""

    repositories: int
    blobs: int
    blob_bytes: int
    manifests: int
    tags: int
    uploads: int


@dataclass(frozen=True, slots=True)
class LinkReview:
    """A repository's blob link queued for garbage collection review: it is collected once
    `since` is older than the grace delay and no manifest of the repository references it.
    Linking and unreferencing the blob move `since` to now; a HEAD or GET moves it into the
    future (see MetadataStore.linked_blob_size). `since` is when the grace delay starts."""

    repository_id: int
    repository: str
    digest: str
    since: float


@dataclass(frozen=True, slots=True)
class BlobReview:
    """A blob queued for review: collected once due and linked into no repository."""

    digest: str
    since: float


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A blob the collector decided to delete: gone from the metadata (readers and writers see
    it as absent) while its bytes may still be in the blob store. `size` is -1 when the
    metadata never knew the bytes (an orphan the sweep found)."""

    digest: str
    size: int
    decided_at: float


@dataclass(frozen=True, slots=True)
class ReviewBacklog:
    links: int
    blobs: int
    tombstones: int
    oldest_since: float | None  # of the link and blob reviews


@dataclass(frozen=True, slots=True)
class TagState:
    """A tag as retention policies see it: `pushed_at` is when it was last pointed at `digest`."""

    name: str
    digest: str
    pushed_at: float


@dataclass(frozen=True, slots=True)
class ManifestState:
    """A manifest as retention policies see it, without its content. `pulled_at` is None until
    a GET is recorded (pull times are recorded since the schema has them)."""

    digest: str
    pushed_at: float
    pulled_at: float | None
    subject: str | None


@dataclass(frozen=True, slots=True)
class RepositoryState:
    """Every tag and manifest of a repository, and which manifests each index references
    (`children`: (index digest, child digest) pairs), read at one moment."""

    tags: list[TagState]
    manifests: list[ManifestState]
    children: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Pull:
    """A manifest GET, noted in memory and recorded in batches (MetadataStore.record_pulls)."""

    repository: str
    digest: str
    at: float


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """A quota (cargobay.lifecycle.quota) that put_manifest enforces: its key, as given to
    set_up_quotas, and its limits (None: unlimited)."""

    key: str
    max_bytes: int | None = None
    max_tags: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    key: str
    bytes: int  # of the blobs charged to it, each once
    tags: int
    repositories: int  # that it knows: matched when it was set up, or pushed to since


class QuotaExceeded(Exception):
    """Raised by put_manifest when the push would take a quota over a limit; nothing stored.
    `what` is "storage" or "tags"; `used` is what the usage would be with the push."""

    def __init__(self, key: str, what: str, used: int, limit: int) -> None:
        super().__init__(f"quota {key}: {what} {used} of {limit}")
        self.key = key
        self.what = what
        self.used = used
        self.limit = limit


class QuotaNotSetUp(Exception):
    """Raised by put_manifest for a quota the store does not know (set_up_quotas first)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"quota {key} is not set up")
        self.key = key


class UploadLocked(Exception):
    """Another request holds the upload session."""


class MissingReferences(Exception):
    """Raised by put_manifest when referenced blobs or manifests are not in the repository."""

    def __init__(self, blobs: Sequence[str], manifests: Sequence[str]) -> None:
        super().__init__(f"missing blobs {list(blobs)}, manifests {list(manifests)}")
        self.blobs = blobs
        self.manifests = manifests


class TagFixed(Exception):
    """Raised by put_manifest when one of its `fixed_tags` points at another manifest, and by
    delete_manifest when a tag it would delete is protected."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"tag {tag!r} points at another manifest and may not move")
        self.tag = tag


class MetadataStore(ABC):
    """Writes that make content visible (links, manifests, tags, deletes) are durable when they
    return. Upload session bookkeeping may be less so: losing it to a power cut costs a client a
    retried upload, never stored content."""

    # -- lifecycle -------------------------------------------------------------------------
    @abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the schema. Safe to call on every start, before workers fork."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise cargobay.errors.Unavailable unless the store answers (for /readyz)."""

    @abstractmethod
    async def statistics(self) -> StoreStatistics: ...

    # -- repositories ------------------------------------------------------------------------
    @abstractmethod
    async def repository_exists(self, name: str) -> bool: ...

    @abstractmethod
    async def list_repositories(self, last: str | None, limit: int) -> list[str]:
        """Names after `last` in byte order, at most `limit`."""

    # -- blobs -------------------------------------------------------------------------------
    @abstractmethod
    async def blob_size(self, digest: str) -> int | None:
        """Size of a blob known anywhere in the registry."""

    @abstractmethod
    async def list_blobs(self, last: str | None, limit: int) -> list[tuple[str, int]]:
        """(digest, size) of blobs stored anywhere, after `last` in byte order."""

    @abstractmethod
    async def linked_blob_size(
        self, repository: str, digest: str, *, keep_for: float | None = None
    ) -> int | None:
        """Size of a blob if it is linked into `repository`. `keep_for` (a client's HEAD or
        GET; the grace delay): a link under review is kept at least that long from now,
        atomically with the answer, so a client that saw it may still reference it in a
        manifest. A review whose delay already starts now or later is left alone; an older
        one is moved to start `keep_for` from now, so the HEADs and GETs of a popular blob
        write at most once per grace delay, not once each."""

    @abstractmethod
    async def link_blob(self, repository: str, digest: str, size: int) -> None:
        """Record the blob (if new) and link it into the repository (created if new). The link
        is queued for review: unreferenced after the grace delay, it is collected."""

    @abstractmethod
    async def link_existing_blob(self, repository: str, digest: str) -> int | None:
        """Link a blob known anywhere in the registry into `repository`, in one transaction
        with finding it (so a blob being collected is never linked again); its size, or
        None if the registry has no such blob."""

    @abstractmethod
    async def unlink_blob(self, repository: str, digest: str) -> bool:
        """Remove a link; the blob is queued for review."""

    @abstractmethod
    async def mount_blob(self, source: str, repository: str, digest: str) -> int | None:
        """Link a blob that `source` has into `repository` too, atomically: an unlink from
        `source` racing it is ordered wholly before it (nothing is linked) or after it. The
        blob's size, or None if `source` does not have it."""

    # -- manifests and tags ------------------------------------------------------------------
    @abstractmethod
    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None: ...

    @abstractmethod
    async def get_tagged_manifest(self, repository: str, tag: str) -> ManifestRecord | None: ...

    @abstractmethod
    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        tags: Sequence[str],
        *,
        fixed_tags: Sequence[str] = (),
        quota_checks: Sequence[QuotaCheck] = (),
    ) -> None:
        """Store the manifest and point `tags` at it, in one transaction. Raises
        MissingReferences, storing nothing, if a reference is not in the repository. Storing
        a manifest again sets its push time (ManifestState.pushed_at) to now.

        `quota_checks` are the quotas the repository falls under: the referenced blobs new to
        each are charged to it, and if that or the new tags take it over a limit, QuotaExceeded
        is raised and nothing is stored; atomically, so that of concurrent pushes exactly as
        many pass as fit.

        Those of `tags` also in `fixed_tags` (immutable tags) may be created, or pointed again
        at the manifest they point at, but never moved: if one points at another manifest,
        TagFixed is raised and nothing is stored. The check is atomic with the write, so of
        concurrent first pushes of one fixed tag exactly one succeeds."""

    @abstractmethod
    async def manifest_tags(self, repository: str, digest: str) -> list[str]:
        """The tags pointing at the manifest, in byte order."""

    @abstractmethod
    async def delete_manifest(
        self,
        repository: str,
        digest: str,
        *,
        protected: Callable[[Sequence[str]], Sequence[str]] | None = None,
    ) -> bool:
        """Delete the manifest and every tag pointing at it; the blob links it referenced are
        queued for review. `protected` (immutable tags) is given the tags pointing at it,
        read atomically with the delete, and returns those that may not go: TagFixed is
        raised for the first, and nothing is deleted."""

    @abstractmethod
    async def delete_tag(self, repository: str, tag: str) -> bool: ...

    @abstractmethod
    async def list_tags(self, repository: str, last: str | None, limit: int) -> list[str]:
        """Tags after `last` in byte order, at most `limit`."""

    @abstractmethod
    async def list_referrers(
        self,
        repository: str,
        subject: str,
        artifact_type: str | None,
        last: str | None,
        limit: int,
    ) -> list[Referrer]:
        """Manifests whose subject is `subject`, ordered by digest, after `last`."""

    # -- uploads -----------------------------------------------------------------------------
    @abstractmethod
    async def create_upload(self, upload: UploadRecord) -> None: ...

    @abstractmethod
    async def get_upload(self, upload_id: str) -> UploadRecord | None: ...

    @abstractmethod
    async def update_upload(
        self, upload_id: str, expected_size: int, size: int, hash_state: bytes | None
    ) -> bool:
        """Advance an upload from `expected_size` to `size`; False if it was not at
        `expected_size` (another request got there first) or is gone."""

    @abstractmethod
    def lock_upload(self, upload_id: str) -> AbstractAsyncContextManager[None]:
        """Hold an upload session exclusively while a request appends to or completes it.
        Raises UploadLocked at once if another request (in any process) holds it. A holder that
        dies releases it."""

    @abstractmethod
    async def delete_upload(self, upload_id: str) -> bool: ...

    @abstractmethod
    async def complete_upload(self, upload: UploadRecord, digest: str, size: int) -> None:
        """Link the uploaded blob into the upload's repository and end the session, in one
        transaction. A tombstone of the blob is removed: the caller holds `lock_blob` and has
        just put the bytes in place."""

    @abstractmethod
    async def list_uploads_older_than(self, timestamp: float) -> list[UploadRecord]: ...

    # -- API tokens (robot accounts) ---------------------------------------------------------
    @abstractmethod
    async def create_api_token(self, token: ApiTokenRecord) -> None: ...

    @abstractmethod
    async def get_api_token(self, token_id: str) -> ApiTokenRecord | None: ...

    @abstractmethod
    async def list_api_tokens(self) -> list[ApiTokenRecord]: ...

    @abstractmethod
    async def revoke_api_token(self, token_id: str) -> bool:
        """Mark the token revoked (kept for the record); False if unknown or already revoked."""

    # -- garbage collection (cargobay.lifecycle.gc) ------------------------------------------
    @abstractmethod
    def lock_blob(self, digest: str) -> AbstractAsyncContextManager[None]:
        """Hold a digest exclusively (every process, every instance), waiting for it: an upload
        holds it from putting the bytes in place until the metadata records them, the
        collector while it deletes a tombstoned blob's bytes. A holder that dies releases it."""

    @abstractmethod
    async def due_link_reviews(self, cutoff: float, limit: int) -> list[LinkReview]:
        """Link reviews with `since` before `cutoff`, oldest first."""

    @abstractmethod
    async def collect_links(
        self, reviews: Sequence[LinkReview], cutoff: float, *, dry_run: bool = False
    ) -> list[LinkReview]:
        """Remove each link still due (not touched since) and referenced by no manifest of
        its repository, checked atomically with the removal; drop reviews of links that are
        referenced or gone. A removed link queues its blob for review, due at once. Returns
        the links removed (`dry_run`: that would be, changing nothing)."""

    @abstractmethod
    async def due_blob_reviews(self, cutoff: float, limit: int) -> list[BlobReview]: ...

    @abstractmethod
    async def collect_blobs(
        self,
        digests: Sequence[str],
        cutoff: float,
        *,
        dry_run: bool = False,
        unlinked: frozenset[tuple[int, str]] = frozenset(),
    ) -> list[Tombstone]:
        """Tombstone each blob still due and linked nowhere, atomically with the check: its
        `blobs` row goes, a tombstone takes its place. Reviews of linked blobs are dropped.
        `dry_run`: change nothing, take every digest given as due, and count the
        (repository_id, digest) links in `unlinked` as gone (they would be removed first)."""

    @abstractmethod
    async def tombstones(self, limit: int) -> list[Tombstone]: ...

    @abstractmethod
    async def is_tombstoned(self, digest: str) -> bool: ...

    @abstractmethod
    async def forget_tombstones(self, digests: Sequence[str]) -> None:
        """Their bytes are deleted: the tombstones go. (An upload that put the bytes back
        meanwhile removed its tombstone already, under `lock_blob`.)"""

    @abstractmethod
    async def queue_unknown_blobs(self, digests: Sequence[str]) -> int:
        """Queue for review those of `digests` (found in the blob store) that the metadata
        does not know at all (no blob, review or tombstone); returns how many were queued."""

    @abstractmethod
    async def review_backlog(self) -> ReviewBacklog: ...

    # -- retention policies (cargobay.lifecycle.retention) -----------------------------------
    @abstractmethod
    async def repository_state(self, repository: str) -> RepositoryState:
        """The repository's tags, manifests and index children, read in one snapshot (empty
        for an unknown repository)."""

    @abstractmethod
    async def delete_tag_if(
        self, repository: str, tag: str, digest: str, pushed_at: float | None = None
    ) -> bool:
        """Delete the tag only if it still points at `digest` and, when `pushed_at` is given,
        was not pushed since (its TagState.pushed_at is unchanged), checked atomically with
        the delete: a push that moved or re-pushed it meanwhile keeps it."""

    @abstractmethod
    async def delete_manifest_if_untagged(
        self, repository: str, digest: str, pushed_before: float | None = None
    ) -> bool:
        """Delete the manifest as delete_manifest does, only if, atomically with the delete,
        no tag points at it, no manifest of the repository references it as a child, its
        subject (if any) is not in the repository, and, given `pushed_before`, it was last
        pushed before then and not pulled since (a pull time recorded at or after it keeps it).
        A push that tagged it, re-pushed it (which refreshes its push time), or an index pushed
        that references it, either commits first (the manifest stays) or finds it gone."""

    @abstractmethod
    async def record_pulls(self, pulls: Sequence[Pull]) -> None:
        """Set the last pull time of each manifest that exists, in one write. Bookkeeping:
        not durable at once (losing the last batch to a power cut is harmless), and a time
        within PULL_TIME_PRECISION of the recorded one is not written again."""

    # -- quotas (cargobay.lifecycle.quota) ----------------------------------------------------
    @abstractmethod
    async def set_up_quotas(
        self, covers: Mapping[str, Callable[[str], bool]], *, drop_others: bool = False
    ) -> list[str]:
        """Set up the quotas keyed in `covers` (key -> whether it covers a repository name)
        that the store does not know: each gets its repositories (the names it covers) and its
        usage (the blobs its repositories link that a manifest of theirs references, each once)
        computed now. Quotas not given are kept, unless `drop_others`. Returns the keys set up.
        From then on, a blob is charged to a quota when a manifest of one of its repositories
        references it (put_manifest's quota_checks) and uncharged when the last link to it in
        the quota's repositories goes (unlink_blob, garbage collection)."""

    @abstractmethod
    async def quota_usage(self, keys: Sequence[str]) -> list[QuotaUsage]:
        """Usage of those of the quotas that are set up, in the order given."""


async def wait_for_lock(
    try_lock: Callable[[], AbstractAsyncContextManager[None]], what: str
) -> AsyncExitStack:
    """Enter `try_lock()` (which raises UploadLocked when busy), retrying with a growing pause
    until it is free; the returned stack holds it. Blob locks are rarely contended (two
    uploads of the same bytes, or one racing the collector), so polling costs less than a
    queue in every process and instance; the pause grows to 0.25 s for long holds."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    pause = 0.001
    while True:
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(try_lock())
            return stack
        except UploadLocked:
            if time.monotonic() > deadline:
                raise Unavailable(f"timed out waiting for the lock of {what}") from None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)
