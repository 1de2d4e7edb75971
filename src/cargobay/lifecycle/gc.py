"""Online garbage collection: reclaim what nothing references, while the registry serves.

Nothing is found by scanning. The metadata store queues what may have become garbage, as it
happens (metadata.base.LinkReview, BlobReview):
- a blob link is queued when it is created (upload, mount) and when a manifest referencing it
  is deleted; a HEAD or GET of a queued link moves its review on by another grace delay;
- a blob is queued when a link to it is removed, and when the sweep finds bytes in the blob
  store that the metadata does not know (left by a crash).

A collection takes the reviews that are due (untouched for `gc.delay_seconds`) and decides each
in a metadata transaction that checks and acts at once: a link referenced by no manifest of
its repository is removed; a blob linked nowhere becomes a tombstone (its row is gone, so every
reader and writer sees it as absent). Only then are the bytes deleted, under the digest's
lock (MetadataStore.lock_blob), which an upload of the same digest holds from putting its
bytes in place until the metadata records them, and the tombstone is dropped. A crash at any
point leaves at worst a tombstone (the next collection deletes its bytes) or bytes nobody
knows (the sweep finds them): never metadata pointing at missing bytes.

Manifests are never collected here: untagged manifests stay (people pull by digest) until a
retention policy deletes them, and what they reference stays with them. One process of the
whole registry collects at a time (a lock in the metadata store); the others skip the cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cargobay import metrics
from cargobay.config import GCConfig
from cargobay.errors import RegistryError, Unavailable
from cargobay.metadata.base import LinkReview, MetadataStore, Tombstone, UploadLocked
from cargobay.registry.digest import Digest
from cargobay.storage.base import BlobStore

log = logging.getLogger("cargobay")

BATCH = 256  # reviews decided per metadata call
SWEEP_BATCH = 500
DELETE_CONCURRENCY = 16  # byte deletions in flight
DRY_RUN_LIMIT = 100_000  # reviews a dry run looks at (it cannot page by consuming them)
# Held by the collecting process, and by the sweeping one (upload locks on ids no upload has).
COLLECTION_LOCK = str(uuid.UUID(int=1))
SWEEP_LOCK = str(uuid.UUID(int=2))

Progress = Callable[[str, int], None]  # (phase, items done)


@dataclass
class CollectionReport:
    dry_run: bool = False
    links: list[LinkReview] = field(default_factory=list)  # removed (dry run: would be)
    blobs: list[Tombstone] = field(default_factory=list)  # deleted (dry run: would be)
    bytes: int = 0  # reclaimed from the blob store (dry run: known sizes that would be)
    failures: int = 0  # byte deletions that failed; retried by the next collection
    seconds: float = 0.0


class GarbageCollector:
    def __init__(self, metadata: MetadataStore, blobs: BlobStore, config: GCConfig) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.config = config

    async def collect(
        self, *, dry_run: bool = False, progress: Progress | None = None
    ) -> CollectionReport | None:
        """One whole collection of what is due now; None if another process is collecting."""
        try:
            async with self.metadata.lock_upload(COLLECTION_LOCK):
                return await self._collect(dry_run, progress or (lambda phase, done: None))
        except UploadLocked:
            return None

    async def _collect(self, dry_run: bool, progress: Progress) -> CollectionReport:
        started = time.monotonic()
        cutoff = time.time() - self.config.delay_seconds
        report = CollectionReport(dry_run=dry_run)
        if dry_run:
            reviews = await self.metadata.due_link_reviews(cutoff, DRY_RUN_LIMIT)
            report.links = await self.metadata.collect_links(reviews, cutoff, dry_run=True)
            unlinked = frozenset((r.repository_id, r.digest) for r in report.links)
            candidates = {r.digest for r in report.links}
            candidates.update(
                r.digest for r in await self.metadata.due_blob_reviews(cutoff, DRY_RUN_LIMIT)
            )
            # Blobs whose last link would go are due at once, as in a real collection.
            report.blobs = await self.metadata.collect_blobs(
                sorted(candidates), cutoff, dry_run=True, unlinked=unlinked
            )
            report.bytes = sum(max(t.size, 0) for t in report.blobs)
            report.seconds = time.monotonic() - started
            return report
        while reviews := await self.metadata.due_link_reviews(cutoff, BATCH):
            report.links += await self.metadata.collect_links(reviews, cutoff)
            progress("links", len(report.links))
        while blob_reviews := await self.metadata.due_blob_reviews(cutoff, BATCH):
            digests = [r.digest for r in blob_reviews]
            report.blobs += await self.metadata.collect_blobs(digests, cutoff)
            progress("blobs", len(report.blobs))
        await self._delete_tombstoned(report, progress)
        report.seconds = time.monotonic() - started
        return report

    async def _delete_tombstoned(self, report: CollectionReport, progress: Progress) -> None:
        """Delete the bytes of every tombstone: this collection's, and any a crash left;
        DELETE_CONCURRENCY at a time (object store deletes are round trips)."""
        done = 0
        semaphore = asyncio.Semaphore(DELETE_CONCURRENCY)
        finished: list[str] = []  # forgotten in one transaction per batch

        async def delete(tombstone: Tombstone) -> None:
            nonlocal done
            async with semaphore:
                try:
                    # Awaited first: `report.bytes += await ...` would read the total before
                    # the await and lose what the other deletions add meanwhile.
                    reclaimed = await self._delete_bytes(tombstone)
                except Unavailable as exc:
                    # The tombstone stays: the next collection tries again.
                    report.failures += 1
                    log.warning("garbage collection: cannot delete %s: %s", tombstone.digest, exc)
                    return
                except Exception:
                    report.failures += 1
                    log.exception("garbage collection: cannot delete %s", tombstone.digest)
                    return
                report.bytes += reclaimed
                finished.append(tombstone.digest)
                done += 1
                progress("bytes", done)

        while tombstones := await self.metadata.tombstones(BATCH):
            await asyncio.gather(*map(delete, tombstones))
            await self.metadata.forget_tombstones(finished)
            finished.clear()
            if report.failures:
                return

    async def _delete_bytes(self, tombstone: Tombstone) -> int:
        """Delete the bytes if the tombstone still holds (one the blob outlived is stale);
        either way the caller then forgets it. Once
        the lock is released, an upload of the same bytes may write them again and remove the
        tombstone itself: forgetting it later deletes nothing of that upload's."""
        async with self.metadata.lock_blob(tombstone.digest):
            # Under the lock no upload is putting these bytes in place; one that did since the
            # decision made the blob known again, and its bytes stay.
            if not await self.metadata.is_tombstoned(tombstone.digest):
                return 0
            try:
                digest = Digest.parse(tombstone.digest)
            except RegistryError:
                return 0  # not a blob's name (bytes put there by hand): nothing to delete

            size = tombstone.size
            if size < 0:
                stat = await self.blobs.stat(digest)
                size = stat.size if stat is not None else 0
            deleted = await self.blobs.delete(digest)
            return size if deleted else 0

    async def sweep(self, *, rate: float | None = None) -> int | None:
        """Walk the blob store and queue for review the bytes the metadata does not know, at
        most `rate` objects a second (default: gc.sweep_objects_per_second); how many were
        queued, or None if another process is sweeping."""
        rate = rate or self.config.sweep_objects_per_second
        try:
            async with self.metadata.lock_upload(SWEEP_LOCK):
                started, seen, queued = time.monotonic(), 0, 0
                batch: list[str] = []
                async for digest in self.blobs.list():
                    batch.append(str(digest))
                    seen += 1
                    if len(batch) == SWEEP_BATCH:
                        queued += await self.metadata.queue_unknown_blobs(batch)
                        batch = []
                    ahead = seen / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if batch:
                    queued += await self.metadata.queue_unknown_blobs(batch)
                return queued
        except UploadLocked:
            return None

    async def run_periodically(self) -> None:
        """Collect every gc.interval_seconds (a failed cycle retries sooner, backing off)."""
        pause = self.config.interval_seconds
        while True:
            try:
                report = await self.collect()
                if report is not None:
                    _log_report(report)
                    if metrics.current() is not None:
                        metrics.gc_collection(report, await self.metadata.review_backlog())
                pause = self.config.interval_seconds
                if report is not None and report.failures:
                    pause = min(pause, 30)
            except Unavailable as exc:
                log.warning("garbage collection skipped: %s", exc.message)
                pause = min(self.config.interval_seconds, 30)
            except Exception:
                log.exception("garbage collection failed")
            await asyncio.sleep(pause)

    async def sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_seconds)
            try:
                queued = await self.sweep()
                if queued:
                    log.info("garbage collection sweep: %d unknown blobs queued for review", queued)
            except Unavailable as exc:
                log.warning("garbage collection sweep skipped: %s", exc.message)
            except Exception:
                log.exception("garbage collection sweep failed")


def _log_report(report: CollectionReport) -> None:
    if report.links or report.blobs or report.failures:
        log.info(
            "garbage collection: %d links and %d blobs removed, %d bytes reclaimed in %.1f s%s",
            len(report.links),
            len(report.blobs),
            report.bytes,
            report.seconds,
            f"; {report.failures} deletions failed, retried later" if report.failures else "",
        )
