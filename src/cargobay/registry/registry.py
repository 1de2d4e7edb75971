"""The registry's operations, free of HTTP: what each endpoint does, given parsed input.

Handlers in `cargobay.api` call these methods and render what they return; every failure is a
typed `RegistryError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from cargobay.config import RegistryConfig
from cargobay.errors import (
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
    TagInvalid,
    Unavailable,
    Unsupported,
)
from cargobay.lifecycle.immutable import ImmutableTags
from cargobay.lifecycle.pull_times import PullTimes
from cargobay.lifecycle.quota import Quotas, refusal
from cargobay.metadata.base import (
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    QuotaExceeded,
    QuotaNotSetUp,
    Referrer,
    TagFixed,
)
from cargobay.registry.digest import DEFAULT_ALGORITHM, Digest
from cargobay.registry.manifests import (
    DOCKER_MANIFEST_LIST,
    parse_manifest,
)
from cargobay.registry.names import check_tag, is_tag
from cargobay.registry.uploads import Uploads
from cargobay.storage.base import BlobStore

# More tags than this in one manifest PUT are refused with 414 (the spec asks for at least 10).
MAX_TAGS_PER_PUSH = 100


@dataclass(frozen=True, slots=True)
class BlobLocation:
    digest: Digest
    size: int
    path: str | None  # serve with sendfile
    url: str | None  # or redirect here


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    more: bool


@dataclass(frozen=True, slots=True)
class ReferrerPage:
    referrers: list[Referrer]
    more: bool


class Registry:
    def __init__(
        self,
        blobs: BlobStore,
        metadata: MetadataStore,
        config: RegistryConfig,
        immutable: ImmutableTags | None = None,
        gc_delay_seconds: float = 86400,
        quotas: Quotas | None = None,
    ) -> None:
        self.blobs = blobs
        self.quotas = quotas or Quotas(metadata)
        self.gc_delay_seconds = gc_delay_seconds
        self.metadata = metadata
        self.config = config
        self.immutable = immutable or ImmutableTags()
        self.uploads = Uploads(blobs, metadata)
        # Manifest GETs, for retention's pulled_within; written in batches off the request path.
        self.pulls = PullTimes(metadata)

    # -- blobs -------------------------------------------------------------------------------
    async def locate_blob(
        self, repository: str, digest_text: str, *, for_download: bool = True
    ) -> BlobLocation:
        """Where to serve a blob from; `for_download=False` (HEAD) skips presigning a URL."""
        digest = Digest.parse(digest_text)
        # A client that saw the blob may reference it in a manifest it pushes next: garbage
        # collection keeps the link for a grace delay from now.
        size = await self.metadata.linked_blob_size(
            repository, str(digest), keep_for=self.gc_delay_seconds
        )
        if size is None:
            raise BlobUnknown(detail={"digest": str(digest)})
        url = await self.blobs.url_for(digest) if for_download else None
        return BlobLocation(digest, size, self.blobs.local_path(digest), url)

    def read_blob(self, digest: Digest, offset: int, length: int) -> AsyncIterator[bytes]:
        return self.blobs.read(digest, offset, length)

    async def delete_blob(self, repository: str, digest_text: str) -> None:
        self._check_deletes()
        digest = Digest.parse(digest_text)
        # Only the link goes: the bytes may be shared with other repositories, and are
        # reclaimed by garbage collection (lifecycle.gc) once nothing links them.
        if not await self.metadata.unlink_blob(repository, str(digest)):
            raise BlobUnknown(detail={"digest": str(digest)})

    async def check_room(self, repository: str) -> None:
        """Refuse (403 DENIED) an upload or a mount into a repository whose quota is full, before
        any byte is sent (Harbor#17390)."""
        await self.quotas.refuse_if_full(repository)

    async def mount_blob(
        self, repository: str, digest_text: str, source: str | None, *, anywhere: bool = True
    ) -> int | None:
        """Link a blob another repository has; its size, or None if it cannot be mounted.
        `anywhere=False` (the caller may not read every repository) limits it to `source`."""
        digest = str(Digest.parse(digest_text))
        size = None
        if source is not None:
            # Checked and linked in one transaction: a mount that found the blob in `source`
            # before a delete there must not link it after the delete (into `source` itself,
            # that would undo the delete).
            size = await self.metadata.mount_blob(source, repository, digest)
        if size is None and anywhere and self.config.auto_mount:
            size = await self.metadata.link_existing_blob(repository, digest)
        return size

    # -- manifests ---------------------------------------------------------------------------
    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = ()
    ) -> ManifestRecord:
        if is_tag(reference):
            manifest = await self.metadata.get_tagged_manifest(repository, reference)
        elif ":" in reference:
            manifest = await self.metadata.get_manifest(repository, str(Digest.parse(reference)))
        else:
            raise TagInvalid(f"invalid reference {reference!r}: not a tag or a digest")
        if manifest is None:
            await self._raise_unknown(repository, reference)
        if is_tag(reference) and accept and manifest.media_type not in accept:
            return await self._platform_fallback(repository, manifest, accept)
        return manifest

    async def _platform_fallback(
        self, repository: str, manifest: ManifestRecord, accept: Sequence[str]
    ) -> ManifestRecord:
        """A client that cannot read manifest lists gets the linux/amd64 image, as from
        distribution; anything else is served as stored and the client decides."""
        if manifest.media_type != DOCKER_MANIFEST_LIST:
            return manifest
        for entry in json.loads(manifest.content).get("manifests", []):
            platform = entry.get("platform") or {}
            if (
                platform.get("os") == "linux"
                and platform.get("architecture") == "amd64"
                and entry.get("mediaType") in accept
            ):
                child = await self.metadata.get_manifest(repository, entry["digest"])
                if child is not None:
                    return child
        return manifest

    async def put_manifest(
        self,
        repository: str,
        reference: str,
        content: bytes,
        content_type: str | None,
        extra_tags: Sequence[str] = (),
    ) -> tuple[ManifestRecord, list[str]]:
        if len(content) > self.config.max_manifest_bytes:
            raise ManifestTooLarge(
                f"manifest is {len(content)} bytes; the limit is {self.config.max_manifest_bytes}"
            )
        tags = [check_tag(t) for t in dict.fromkeys(extra_tags)]
        if is_tag(reference):
            digest = Digest.of(content, DEFAULT_ALGORITHM)
            if reference not in tags:
                tags.insert(0, reference)
        elif ":" in reference:
            expected = Digest.parse(reference)
            digest = Digest.of(content, expected.algorithm)
            if digest != expected:
                raise DigestInvalid(
                    f"manifest content has digest {digest}, not {expected}",
                    detail={"expected": str(expected), "actual": str(digest)},
                )
        else:
            raise TagInvalid(f"invalid reference {reference!r}: not a tag or a digest")
        if len(tags) > MAX_TAGS_PER_PUSH:
            raise Unsupported(f"at most {MAX_TAGS_PER_PUSH} tags per manifest push", status=414)
        record = parse_manifest(content, content_type, digest).record
        fixed = self.immutable.fixed(repository, tags)
        try:
            await self._store_manifest(repository, record, tags, fixed)
        except QuotaExceeded as exceeded:
            raise refusal(exceeded) from None
        except TagFixed as refused:
            raise self._immutable(repository, refused.tag) from None
        except MissingReferences as missing:
            raise ManifestBlobUnknown(
                "manifest references "
                + ", ".join(
                    [f"blob {d}" for d in missing.blobs]
                    + [f"manifest {d}" for d in missing.manifests]
                )
                + " unknown to this repository",
                detail={"blobs": list(missing.blobs), "manifests": list(missing.manifests)},
            ) from None
        return record, tags

    async def _store_manifest(
        self, repository: str, record: ManifestRecord, tags: list[str], fixed: list[str]
    ) -> None:
        checks = self.quotas.checks(repository)
        try:
            await self.metadata.put_manifest(
                repository, record, tags, fixed_tags=fixed, quota_checks=checks
            )
        except QuotaNotSetUp:
            # Another instance, configured without this quota, dropped it: set it up again.
            await self.quotas.set_up()
            try:
                await self.metadata.put_manifest(
                    repository, record, tags, fixed_tags=fixed, quota_checks=checks
                )
            except QuotaNotSetUp as again:
                # Dropped again in between (an instance without it starting): not this push's
                # fault, and retrying later sets it up again.
                raise Unavailable(
                    f"quota {again.key} is being set up (an instance configured without it"
                    " dropped it), retry later",
                    detail={"quota": again.key},
                ) from None

    async def delete_manifest(self, repository: str, reference: str) -> None:
        self._check_deletes()
        if is_tag(reference):
            if self.immutable.fixed(repository, [reference]):
                raise self._immutable(repository, reference)
            deleted = await self.metadata.delete_tag(repository, reference)
        elif ":" in reference:
            digest = str(Digest.parse(reference))
            protected = None
            if self.immutable.rules:

                def protected(tags: Sequence[str]) -> Sequence[str]:
                    return self.immutable.fixed(repository, tags)

            try:
                deleted = await self.metadata.delete_manifest(
                    repository, digest, protected=protected
                )
            except TagFixed as refused:
                raise self._immutable(repository, refused.tag) from None
        else:
            raise TagInvalid(f"invalid reference {reference!r}: not a tag or a digest")
        if not deleted:
            await self._raise_unknown(repository, reference)

    # -- discovery ---------------------------------------------------------------------------
    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> Page:
        if not await self.metadata.repository_exists(repository):
            raise NameUnknown(detail={"name": repository})
        return await _page(lambda n: self.metadata.list_tags(repository, last, n), limit)

    async def list_repositories(self, limit: int | None, last: str | None) -> Page:
        return await _page(lambda n: self.metadata.list_repositories(last, n), limit)

    async def list_referrers(
        self,
        repository: str,
        digest_text: str,
        artifact_type: str | None,
        limit: int,
        last: str | None,
    ) -> ReferrerPage:
        subject = str(Digest.parse(digest_text))
        found = await self.metadata.list_referrers(
            repository, subject, artifact_type, last, limit + 1
        )
        return ReferrerPage(found[:limit], len(found) > limit)

    # -- helpers -----------------------------------------------------------------------------
    def _check_deletes(self) -> None:
        if not self.config.delete_enabled:
            raise Unsupported("deletes are disabled on this registry", status=405)

    def _immutable(self, repository: str, tag: str) -> Denied:
        rule = self.immutable.rule_for(repository, tag)
        assert rule is not None  # only tags a rule covers are refused
        return Denied(
            rule.refusal(repository, tag),
            detail={"repository": repository, "tag": tag, "rule": f"immutable_tags[{rule.index}]"},
        )

    async def _raise_unknown(self, repository: str, reference: str) -> NoReturn:
        if not await self.metadata.repository_exists(repository):
            raise NameUnknown(detail={"name": repository})
        raise ManifestUnknown(detail={"reference": reference})


async def _page(fetch: Callable[[int], Awaitable[list[str]]], limit: int | None) -> Page:
    """One page of a sorted listing; fetches one item more than asked to tell if there are more."""
    if limit == 0:
        return Page([], False)
    want = limit if limit is not None else 1_000_000_000
    items: list[str] = await fetch(want + 1)
    return Page(items[:want], len(items) > want)
