"""Garbage collection bookkeeping of the PostgreSQL store (see cargobay.lifecycle.gc).

Each decision runs in its own READ COMMITTED transaction that first locks what it decides on,
in the order every writer takes them: a link decision locks the link row, then its review
row; a blob decision its review row, then the blob row (writers that link lock the blob row
FOR KEY SHARE and never wait for a blob review). The check that follows (referenced? linked
anywhere?) is a new statement, so it sees everything committed by the writers it waited for:
- put_manifest holds its links FOR KEY SHARE: the collector waits for it and then sees its
  references, or removes the link first and put_manifest finds it missing.
- linking (upload, mount) upserts the link's review and locks the blob row FOR KEY SHARE
  before it inserts the link: a collector about to remove the link or delete the blob row is
  waited for, and the link or row is then written anew; a collector that comes after it finds
  the review not due.
- a touch (HEAD/GET) updates the review row: a collector holding it is waited for, and after
  it the link is found gone; a touch that came first makes the review not due.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cargobay.metadata.base import BlobReview, LinkReview, ReviewBacklog, Tombstone

T = TypeVar("T")
Connection = Any

_LOCK_LINK_REVIEW = """
    SELECT since FROM gc_link_reviews WHERE repository_id = $1 AND digest = $2 FOR UPDATE"""
_LINK_STATE = """
    SELECT EXISTS (SELECT FROM repository_blobs WHERE repository_id = $1 AND digest = $2),
        EXISTS (SELECT FROM manifest_references
            WHERE repository_id = $1 AND digest = $2 AND kind = 'blob')"""
_BLOB_STATE = """
    SELECT ARRAY(SELECT repository_id FROM repository_blobs WHERE digest = $1),
        (SELECT size FROM blobs WHERE digest = $1),
        EXISTS (SELECT FROM gc_tombstones WHERE digest = $1),
        EXISTS (SELECT FROM manifest_references WHERE digest = $1 AND kind = 'blob')"""


class PostgresGarbageCollection:
    if TYPE_CHECKING:

        def _run(
            self, work: Callable[[Connection], Awaitable[T]], *, transaction: bool = False
        ) -> Awaitable[T]: ...

        async def _fetch(self, sql: str, *args: object) -> list[Any]: ...

        async def _fetchrow(self, sql: str, *args: object) -> Any: ...

        async def _execute(self, sql: str, *args: object) -> int: ...

        async def _uncharge_link(self, conn: Connection, repo_id: int, digest: str) -> None: ...

    async def due_link_reviews(self, cutoff: float, limit: int) -> list[LinkReview]:
        rows = await self._fetch(
            "SELECT g.repository_id, r.name, g.digest, g.since FROM gc_link_reviews g"
            " JOIN repositories r ON r.id = g.repository_id"
            " WHERE g.since < $1 ORDER BY g.since LIMIT $2",
            cutoff,
            limit,
        )
        return [LinkReview(int(r[0]), r[1], r[2], float(r[3])) for r in rows]

    async def collect_links(
        self, reviews: Sequence[LinkReview], cutoff: float, *, dry_run: bool = False
    ) -> list[LinkReview]:
        async def decide(conn: Connection, review: LinkReview) -> bool:
            key = (review.repository_id, review.digest)
            if dry_run:
                since = await conn.fetchval(
                    "SELECT since FROM gc_link_reviews WHERE repository_id = $1 AND digest = $2",
                    *key,
                )
                if since is None or since >= cutoff:
                    return False
                linked, referenced = await conn.fetchrow(_LINK_STATE, *key)
                return bool(linked and not referenced)
            # The link first, then its review: the order of mounts (source link FOR KEY SHARE,
            # then the target's review) and of API unlinks (link, then review).
            await conn.execute(
                "SELECT FROM repository_blobs WHERE repository_id = $1 AND digest = $2 FOR UPDATE",
                *key,
            )
            since = await conn.fetchval(_LOCK_LINK_REVIEW, *key)
            if since is None or since >= cutoff:
                return False  # touched again, or reviewed by another collector
            linked, referenced = await conn.fetchrow(_LINK_STATE, *key)
            await conn.execute(
                "DELETE FROM gc_link_reviews WHERE repository_id = $1 AND digest = $2", *key
            )
            if not linked:
                # Deleted through the API while a manifest referenced it: the blob was kept
                # for that manifest, and may be garbage now that it is gone.
                await conn.execute(
                    "INSERT INTO gc_blob_reviews (digest, since) VALUES ($1, $2)"
                    " ON CONFLICT (digest) DO NOTHING",
                    review.digest,
                    review.since,
                )
            if not linked or referenced:
                return False
            await conn.execute(
                "DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2", *key
            )
            # The blob's own review is due at once: the link had its grace delay.
            await conn.execute(
                "INSERT INTO gc_blob_reviews (digest, since) VALUES ($1, $2)"
                " ON CONFLICT (digest) DO NOTHING",
                review.digest,
                review.since,
            )
            # Then the quota rows (metadata/postgres_quota.py), after the link: the lock order.
            await self._uncharge_link(conn, review.repository_id, review.digest)
            return True

        removed = []
        for review in reviews:

            async def txn(conn: Connection, review: LinkReview = review) -> bool:
                return await decide(conn, review)

            if await self._run(txn, transaction=True):
                removed.append(review)
        return removed

    async def due_blob_reviews(self, cutoff: float, limit: int) -> list[BlobReview]:
        rows = await self._fetch(
            "SELECT digest, since FROM gc_blob_reviews WHERE since < $1 ORDER BY since LIMIT $2",
            cutoff,
            limit,
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
        async def decide(conn: Connection, digest: str) -> Tombstone | None:
            if not dry_run:
                since = await conn.fetchval(
                    "SELECT since FROM gc_blob_reviews WHERE digest = $1 FOR UPDATE", digest
                )
                if since is None or since >= cutoff:
                    return None
                await conn.execute("SELECT FROM blobs WHERE digest = $1 FOR UPDATE", digest)
            links, size, gone, referenced = await conn.fetchrow(_BLOB_STATE, digest)
            # A manifest referencing it keeps it, even where its link was deleted (no new
            # reference can appear without a link, which the check above would see).
            linked = referenced or any((int(r), digest) not in unlinked for r in links)
            # Already decided, unless an upload brought the blob back since (its row).
            undecided = not gone or size is not None
            known = -1 if size is None else size
            decided = Tombstone(digest, known, 0) if undecided and not linked else None
            if dry_run:
                return decided
            await conn.execute("DELETE FROM gc_blob_reviews WHERE digest = $1", digest)
            if decided is not None:
                decided = Tombstone(digest, decided.size, time.time())
                await conn.execute("DELETE FROM blobs WHERE digest = $1", digest)
                await conn.execute(
                    "INSERT INTO gc_tombstones (digest, size, decided_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT (digest) DO UPDATE SET"
                    " size = excluded.size, decided_at = excluded.decided_at",
                    digest,
                    decided.size,
                    decided.decided_at,
                )
            return decided

        tombstones = []
        for digest in digests:

            async def txn(conn: Connection, digest: str = digest) -> Tombstone | None:
                return await decide(conn, digest)

            found = await self._run(txn, transaction=not dry_run)
            if found is not None:
                tombstones.append(found)
        return tombstones

    async def tombstones(self, limit: int) -> list[Tombstone]:
        rows = await self._fetch(
            "SELECT digest, size, decided_at FROM gc_tombstones ORDER BY decided_at LIMIT $1",
            limit,
        )
        return [Tombstone(r[0], int(r[1]), float(r[2])) for r in rows]

    async def is_tombstoned(self, digest: str) -> bool:
        row = await self._fetchrow(
            "SELECT FROM gc_tombstones t WHERE digest = $1"
            " AND NOT EXISTS (SELECT FROM blobs b WHERE b.digest = t.digest)",
            digest,
        )
        return row is not None

    async def forget_tombstones(self, digests: Sequence[str]) -> None:
        await self._execute(
            "DELETE FROM gc_tombstones WHERE digest = ANY($1::text[])", sorted(set(digests))
        )

    async def queue_unknown_blobs(self, digests: Sequence[str]) -> int:
        return await self._execute(
            "INSERT INTO gc_blob_reviews (digest, since)"
            " SELECT d, $2 FROM unnest($1::text[]) AS d"
            " WHERE NOT EXISTS (SELECT FROM blobs b WHERE b.digest = d)"
            " AND NOT EXISTS (SELECT FROM gc_tombstones t WHERE t.digest = d)"
            " ORDER BY d ON CONFLICT (digest) DO NOTHING",
            sorted(set(digests)),
            time.time(),
        )

    async def review_backlog(self) -> ReviewBacklog:
        row = await self._fetchrow(
            "SELECT (SELECT count(*) FROM gc_link_reviews), (SELECT count(*) FROM gc_blob_reviews),"
            " (SELECT count(*) FROM gc_tombstones),"
            " LEAST((SELECT min(since) FROM gc_link_reviews),"
            " (SELECT min(since) FROM gc_blob_reviews))"
        )
        return ReviewBacklog(int(row[0]), int(row[1]), int(row[2]), row[3])
