"""Garbage collection bookkeeping of the SQLite store (see cargobay.lifecycle.gc).

Every write transaction of the store holds SQLite's one write lock, so each decision here (a
link unreferenced and untouched, a blob linked nowhere) is checked and carried out atomically
with respect to every push, mount, touch and delete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cargobay.metadata.base import (
    BlobReview,
    LinkReview,
    ReviewBacklog,
    Tombstone,
    UploadLocked,
    wait_for_lock,
)

T = TypeVar("T")

BLOB_LOCK_STRIPES = 1024  # lock files; digests share them by hash


def _referenced(db: sqlite3.Connection, digest: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM manifest_references WHERE digest = ? AND kind = 'blob' LIMIT 1", (digest,)
    ).fetchone()
    return row is not None


class SQLiteGarbageCollection:
    if TYPE_CHECKING:
        path: Path

        @property
        def _db(self) -> sqlite3.Connection: ...

        def _transaction(
            self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
        ) -> Awaitable[T]: ...

        def _uncharge_link(self, db: sqlite3.Connection, repo_id: int, digest: str) -> None: ...

    @asynccontextmanager
    async def lock_blob(self, digest: str) -> AsyncIterator[None]:
        # flock locks belong to an open file: two requests of one process exclude each other
        # too, and the kernel releases the lock of a process that dies.
        folder = self.path.parent / "blob-locks"
        folder.mkdir(exist_ok=True)
        hashed = hashlib.sha256(digest.encode()).digest()
        stripe = int.from_bytes(hashed[:4], "big") % BLOB_LOCK_STRIPES
        fd = os.open(folder / f"{stripe:04d}", os.O_RDWR | os.O_CREAT, 0o644)
        try:

            @asynccontextmanager
            async def try_lock() -> AsyncIterator[None]:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UploadLocked(digest) from None
                yield

            async with await wait_for_lock(try_lock, digest):
                yield
        finally:
            os.close(fd)  # releases the flock

    async def due_link_reviews(self, cutoff: float, limit: int) -> list[LinkReview]:
        rows = self._db.execute(
            "SELECT g.repository_id, r.name, g.digest, g.since FROM gc_link_reviews g"
            " JOIN repositories r ON r.id = g.repository_id"
            " WHERE g.since < ? ORDER BY g.since LIMIT ?",
            (cutoff, limit),
        )
        return [LinkReview(int(r[0]), r[1], r[2], float(r[3])) for r in rows]

    async def collect_links(
        self, reviews: Sequence[LinkReview], cutoff: float, *, dry_run: bool = False
    ) -> list[LinkReview]:
        def work(db: sqlite3.Connection) -> list[LinkReview]:
            removed = []
            for review in reviews:
                key = (review.repository_id, review.digest)
                row = db.execute(
                    "SELECT since FROM gc_link_reviews WHERE repository_id = ? AND digest = ?",
                    key,
                ).fetchone()
                if row is None or row[0] >= cutoff:
                    continue  # touched again, or reviewed by another collector
                linked = db.execute(
                    "SELECT 1 FROM repository_blobs WHERE repository_id = ? AND digest = ?", key
                ).fetchone()
                referenced = db.execute(
                    "SELECT 1 FROM manifest_references WHERE repository_id = ? AND digest = ?"
                    " AND kind = 'blob' LIMIT 1",
                    key,
                ).fetchone()
                if linked and not referenced:
                    removed.append(review)
                if dry_run:
                    continue
                db.execute(
                    "DELETE FROM gc_link_reviews WHERE repository_id = ? AND digest = ?", key
                )
                if not linked:
                    # Deleted through the API while a manifest referenced it: the blob was
                    # kept for that manifest, and may be garbage now that it is gone.
                    db.execute(
                        "INSERT INTO gc_blob_reviews (digest, since) VALUES (?, ?)"
                        " ON CONFLICT (digest) DO NOTHING",
                        (review.digest, review.since),
                    )
                if linked and not referenced:
                    db.execute(
                        "DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?",
                        key,
                    )
                    # The blob's own review is due at once: the link had its grace delay.
                    db.execute(
                        "INSERT INTO gc_blob_reviews (digest, since) VALUES (?, ?)"
                        " ON CONFLICT (digest) DO NOTHING",
                        (review.digest, review.since),
                    )
                    self._uncharge_link(db, review.repository_id, review.digest)
            return removed

        if dry_run:
            return work(self._db)
        return await self._transaction(work)

    async def due_blob_reviews(self, cutoff: float, limit: int) -> list[BlobReview]:
        rows = self._db.execute(
            "SELECT digest, since FROM gc_blob_reviews WHERE since < ? ORDER BY since LIMIT ?",
            (cutoff, limit),
        )
        return [BlobReview(r[0], float(r[1])) for r in rows]

    async def collect_blobs(
        self,
        digests: Sequence[str],
        cutoff: float,
        *,
        dry_run: bool = False,
        unlinked: frozenset[tuple[int, str]] = frozenset(),
    ) -> list[Tombstone]:
        def work(db: sqlite3.Connection) -> list[Tombstone]:
            decided = []
            now = time.time()
            for digest in digests:
                row = db.execute(
                    "SELECT since FROM gc_blob_reviews WHERE digest = ?", (digest,)
                ).fetchone()
                if not dry_run and (row is None or row[0] >= cutoff):
                    continue
                links = db.execute(
                    "SELECT repository_id FROM repository_blobs WHERE digest = ?", (digest,)
                )
                linked = any((r[0], digest) not in unlinked for r in links)
                # A manifest referencing it keeps it, even where its link was deleted.
                linked = linked or _referenced(db, digest)
                known = db.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchone()
                gone = db.execute(
                    "SELECT 1 FROM gc_tombstones WHERE digest = ?", (digest,)
                ).fetchone()
                # Already decided, unless an upload brought the blob back since (its row).
                undecided = not gone or known is not None
                if not linked and undecided:
                    decided.append(Tombstone(digest, -1 if known is None else known[0], now))
                if dry_run:
                    continue
                db.execute("DELETE FROM gc_blob_reviews WHERE digest = ?", (digest,))
                if not linked and undecided:
                    db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
                    db.execute(
                        "INSERT INTO gc_tombstones (digest, size, decided_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (digest) DO UPDATE SET"
                        " size = excluded.size, decided_at = excluded.decided_at",
                        (digest, decided[-1].size, now),
                    )
            return decided

        if dry_run:
            return work(self._db)
        return await self._transaction(work)

    async def tombstones(self, limit: int) -> list[Tombstone]:
        rows = self._db.execute(
            "SELECT digest, size, decided_at FROM gc_tombstones ORDER BY decided_at LIMIT ?",
            (limit,),
        )
        return [Tombstone(r[0], int(r[1]), float(r[2])) for r in rows]

    async def is_tombstoned(self, digest: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM gc_tombstones WHERE digest = ?1"
            " AND NOT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)",
            (digest,),
        )
        return row.fetchone() is not None

    async def forget_tombstones(self, digests: Sequence[str]) -> None:
        def txn(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM gc_tombstones WHERE digest = ?", [(d,) for d in digests])

        await self._transaction(txn, durable=False)

    async def queue_unknown_blobs(self, digests: Sequence[str]) -> int:
        def txn(db: sqlite3.Connection) -> int:
            now = time.time()
            queued = 0
            for digest in digests:
                known = db.execute(
                    "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)"
                    " OR EXISTS (SELECT 1 FROM gc_blob_reviews WHERE digest = ?1)"
                    " OR EXISTS (SELECT 1 FROM gc_tombstones WHERE digest = ?1)",
                    (digest,),
                ).fetchone()[0]
                if not known:
                    db.execute(
                        "INSERT INTO gc_blob_reviews (digest, since) VALUES (?, ?)", (digest, now)
                    )
                    queued += 1
            return queued

        return await self._transaction(txn, durable=False)

    async def review_backlog(self) -> ReviewBacklog:
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM gc_link_reviews), (SELECT count(*) FROM gc_blob_reviews),"
            " (SELECT count(*) FROM gc_tombstones), (SELECT min(since) FROM gc_link_reviews),"
            " (SELECT min(since) FROM gc_blob_reviews)"
        ).fetchone()
        oldest = [float(v) for v in row[3:] if v is not None]
        return ReviewBacklog(int(row[0]), int(row[1]), int(row[2]), min(oldest, default=None))
