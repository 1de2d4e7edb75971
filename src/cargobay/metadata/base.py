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

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass


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


class UploadLocked(Exception):
    """Another request holds the upload session."""


class MissingReferences(Exception):
    """Raised by put_manifest when referenced blobs or manifests are not in the repository."""

    def __init__(self, blobs: Sequence[str], manifests: Sequence[str]) -> None:
        super().__init__(f"missing blobs {list(blobs)}, manifests {list(manifests)}")
        self.blobs = blobs
        self.manifests = manifests


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
    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob if it is linked into `repository`."""

    @abstractmethod
    async def link_blob(self, repository: str, digest: str, size: int) -> None:
        """Record the blob (if new) and link it into the repository (created if new)."""

    @abstractmethod
    async def unlink_blob(self, repository: str, digest: str) -> bool: ...

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
        self, repository: str, manifest: ManifestRecord, tags: Sequence[str]
    ) -> None:
        """Store the manifest and point `tags` at it, in one transaction. Raises
        MissingReferences, storing nothing, if a reference is not in the repository."""

    @abstractmethod
    async def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete the manifest and every tag pointing at it."""

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
        transaction."""

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
