"""Quota bookkeeping of the SQLite store (see cargobay.lifecycle.quota and docs/gc.md).

Every write transaction holds SQLite's one write lock, so a push's check (usage so far plus
what it adds) and its charge are atomic with respect to every other push and unlink: no
locking beyond that is needed here. The tables and their meaning are those of the PostgreSQL
store (metadata/postgres_quota.py), which explains the design.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from cargobay.metadata.base import (
    ManifestRecord,
    QuotaCheck,
    QuotaExceeded,
    QuotaNotSetUp,
    QuotaUsage,
)

T = TypeVar("T")

USAGE_SHARDS = 16  # rows per quota in quota_usage: 0 for pushes, 1-15 for unlinks
BATCH = 500  # bound parameters per IN (...), well under SQLite's limit

_TAGS_IN_QUOTA = (
    "SELECT count(*) FROM quota_repositories qr JOIN tags t ON t.repository_id = qr.repository_id"
    " WHERE qr.quota = ?"
)
# A blob's charge stays while any repository of the quota links it.
_LINKED_IN_QUOTA = (
    "SELECT 1 FROM repository_blobs rb"
    " JOIN quota_repositories qr ON qr.repository_id = rb.repository_id"
    " WHERE qr.quota = ? AND rb.digest = ? LIMIT 1"
)


def uncharge_shard(digest: str) -> int:
    """The quota_usage shard an uncharge of this blob subtracts from (never 0, which pushes
    lock): spread so that unlinks of different blobs do not contend."""
    return 1 + zlib.crc32(digest.encode()) % (USAGE_SHARDS - 1)


def _batches(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


class SQLiteQuotas:
    if TYPE_CHECKING:

        @property
        def _db(self) -> sqlite3.Connection: ...

        def _transaction(
            self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
        ) -> Awaitable[T]: ...

    def _enforce_quotas(
        self,
        db: sqlite3.Connection,
        repo_id: int | None,
        manifest: ManifestRecord,
        tags: Sequence[str],
        checks: Sequence[QuotaCheck],
    ) -> None:
        """In put_manifest's transaction, before it writes: charge the referenced blobs new to
        each quota, or raise QuotaExceeded (the transaction then stores nothing)."""
        if not checks:
            return
        assert repo_id is not None  # put_manifest creates the repository
        blobs = sorted(set(manifest.blob_references))
        wanted = sorted(set(tags))
        existing = sum(
            db.execute(
                f"SELECT count(*) FROM tags WHERE repository_id = ?"
                f" AND name IN ({','.join('?' * len(batch))})",
                (repo_id, *batch),
            ).fetchone()[0]
            for batch in _batches(wanted)
        )
        new_tags = len(wanted) - existing
        for check in sorted(checks, key=lambda c: c.key):
            key = check.key
            if db.execute("SELECT 1 FROM quota_usage WHERE quota = ?", (key,)).fetchone() is None:
                raise QuotaNotSetUp(key)
            db.execute(
                "INSERT INTO quota_repositories (quota, repository_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (key, repo_id),
            )
            new: list[tuple[str, int]] = []
            for batch in _batches(blobs):
                marks = ",".join("?" * len(batch))
                new += db.execute(
                    f"SELECT b.digest, b.size FROM blobs b WHERE b.digest IN ({marks})"
                    " AND NOT EXISTS (SELECT 1 FROM quota_blobs qb"
                    " WHERE qb.quota = ? AND qb.digest = b.digest)",
                    (*batch, key),
                ).fetchall()
            new_bytes = sum(int(size) for _, size in new)
            if new_bytes and check.max_bytes is not None:
                used = db.execute(
                    "SELECT sum(bytes) FROM quota_usage WHERE quota = ?", (key,)
                ).fetchone()[0]
                if used + new_bytes > check.max_bytes:
                    raise QuotaExceeded(key, "storage", used + new_bytes, check.max_bytes)
            if new_tags and check.max_tags is not None:
                count = db.execute(_TAGS_IN_QUOTA, (key,)).fetchone()[0] + new_tags
                if count > check.max_tags:
                    raise QuotaExceeded(key, "tags", count, check.max_tags)
            if new:
                db.executemany(
                    "INSERT INTO quota_blobs (quota, digest, size) VALUES (?, ?, ?)",
                    [(key, digest, size) for digest, size in new],
                )
                db.execute(
                    "UPDATE quota_usage SET bytes = bytes + ? WHERE quota = ? AND shard = 0",
                    (new_bytes, key),
                )

    def _uncharge_link(self, db: sqlite3.Connection, repo_id: int, digest: str) -> None:
        """After a link is removed, in its transaction: the blob stops counting for each quota
        of the repository that no other of its repositories links it into."""
        charged = db.execute(
            "SELECT qb.quota, qb.size FROM quota_repositories qr"
            " JOIN quota_blobs qb ON qb.quota = qr.quota AND qb.digest = ?"
            " WHERE qr.repository_id = ?",
            (digest, repo_id),
        ).fetchall()
        for quota, size in charged:
            if db.execute(_LINKED_IN_QUOTA, (quota, digest)).fetchone() is not None:
                continue
            db.execute("DELETE FROM quota_blobs WHERE quota = ? AND digest = ?", (quota, digest))
            db.execute(
                "UPDATE quota_usage SET bytes = bytes - ? WHERE quota = ? AND shard = ?",
                (size, quota, uncharge_shard(digest)),
            )

    async def set_up_quotas(
        self, covers: Mapping[str, Callable[[str], bool]], *, drop_others: bool = False
    ) -> list[str]:
        # No lock beyond SQLite's one writer is needed against concurrent uncharges (unlinks,
        # garbage collection): this transaction computes the charges and commits before any
        # other write starts, so an unlink either committed before (and is not charged) or
        # runs after, and sees the quota's charges and repositories.
        def known(db: sqlite3.Connection) -> set[str]:
            return {r[0] for r in db.execute("SELECT DISTINCT quota FROM quota_usage")}

        def recorded(db: sqlite3.Connection) -> set[str]:
            return {r[0] for r in db.execute("SELECT DISTINCT quota FROM quota_repositories")}

        def others(db: sqlite3.Connection) -> set[str]:
            return (known(db) | recorded(db)) - set(covers) if drop_others else set()

        if set(covers) <= known(self._db) and not others(self._db):
            return []  # the usual start: nothing to do, no write lock taken

        def txn(db: sqlite3.Connection) -> list[str]:
            present = known(db)
            for gone in sorted(others(db)):
                for table in ("quota_usage", "quota_blobs", "quota_repositories"):
                    db.execute(f"DELETE FROM {table} WHERE quota = ?", (gone,))
            created = []
            repositories = db.execute("SELECT id, name FROM repositories").fetchall()
            for key, cover in covers.items():
                if key in present:
                    continue
                db.executemany(
                    "INSERT INTO quota_repositories (quota, repository_id) VALUES (?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [(key, repo_id) for repo_id, name in repositories if cover(name)],
                )
                self._compute_usage(db, key)
                created.append(key)
            return created

        return await self._transaction(txn)

    @staticmethod
    def _compute_usage(db: sqlite3.Connection, key: str) -> None:
        """Charge what the quota's repositories link and reference, each blob once."""
        db.execute("DELETE FROM quota_blobs WHERE quota = ?", (key,))
        db.execute(
            "INSERT INTO quota_blobs (quota, digest, size)"
            " SELECT DISTINCT qr.quota, rb.digest, b.size FROM quota_repositories qr"
            " JOIN repository_blobs rb ON rb.repository_id = qr.repository_id"
            " JOIN blobs b ON b.digest = rb.digest"
            " WHERE qr.quota = ? AND EXISTS (SELECT 1 FROM manifest_references mr"
            " WHERE mr.repository_id = rb.repository_id AND mr.digest = rb.digest"
            " AND mr.kind = 'blob')",
            (key,),
        )
        total = db.execute(
            "SELECT coalesce(sum(size), 0) FROM quota_blobs WHERE quota = ?", (key,)
        ).fetchone()[0]
        db.executemany(
            "INSERT INTO quota_usage (quota, shard, bytes) VALUES (?, ?, ?)",
            [(key, shard, total if shard == 0 else 0) for shard in range(USAGE_SHARDS)],
        )

    async def quota_usage(self, keys: Sequence[str]) -> list[QuotaUsage]:
        found = []
        for key in keys:
            used = self._db.execute(
                "SELECT sum(bytes) FROM quota_usage WHERE quota = ?", (key,)
            ).fetchone()[0]
            if used is None:
                continue  # not set up
            tags = self._db.execute(_TAGS_IN_QUOTA, (key,)).fetchone()[0]
            repositories = self._db.execute(
                "SELECT count(*) FROM quota_repositories WHERE quota = ?", (key,)
            ).fetchone()[0]
            found.append(QuotaUsage(key, int(used), int(tags), int(repositories)))
        return found
