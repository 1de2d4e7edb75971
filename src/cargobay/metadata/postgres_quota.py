"""Quota bookkeeping of the PostgreSQL store (see cargobay.lifecycle.quota and docs/gc.md).

What counts: a blob is charged to a quota (a `quota_blobs` row, so once however many of its
repositories link it) when a manifest of one of the quota's repositories references it, and
uncharged when the last link to it in the quota's repositories goes (unlink_blob, or garbage
collection removing the link). Uploads and mounts charge nothing by themselves: a push the
quota refuses leaves nothing charged, and its blobs are collected after the grace delay.
Tags are counted from `tags` when a push adds some, so every way of deleting one (API,
retention policies, cascades) frees quota without bookkeeping.

Exactness without one hot row for everything (Harbor#18440): a quota's charged bytes are kept
in USAGE_SHARDS rows. Only a push that adds something to a quota (a blob new to it, or a new
tag) locks the quota's shard 0 FOR UPDATE, as the last step of put_manifest's transaction, and
then adds its bytes to shard 0 and compares the sum of the shards (and the tag count) with the
limits: pushes adding to one quota are serialised for a few statements and their commit, and
no longer; re-pushes, pulls, deletes and pushes to other quotas do not wait. Uncharges
(unlinks, garbage collection) subtract from shard 1-15 (chosen by digest) and never touch
shard 0, so they never wait for a push; a push that misses an uncharge not yet committed sees
more usage than there is, never less.

Lock order, after the collector's (review row, then link or blob rows, postgres_gc.py):
- put_manifest holds its links FOR KEY SHARE, then locks the quota_blobs rows of what is
  already charged FOR KEY SHARE (an uncharge of them waits for it, and then sees the push's
  repository among the quota's and its link), then shard 0 of each quota in key order, then
  inserts the new charges (waiting for an uncharge deleting the same row, then inserting).
- an uncharge runs after its link is deleted: it takes SET_UP_LOCK shared (waiting for a
  set-up in progress to commit), locks the quota_blobs rows FOR UPDATE, then
  checks in a new statement (seeing what it waited for) whether another repository of the
  quota links the blob, and deletes the row and subtracts from its shard if none does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cargobay.metadata.base import (
    ManifestRecord,
    QuotaCheck,
    QuotaExceeded,
    QuotaNotSetUp,
    QuotaUsage,
)
from cargobay.metadata.sqlite_quota import USAGE_SHARDS, uncharge_shard

T = TypeVar("T")
Connection = Any

# Set-ups of quotas (instances starting together) queue on this transaction advisory lock,
# taken exclusively; uncharges take it shared (see _uncharge_link), so they wait only while a
# set-up runs. It is in the (int, int) key space of the migration lock, with another key.
SET_UP_LOCK = (0x63617267, 0x71756F74)

_LOCK_CHARGED = """
    SELECT digest FROM quota_blobs WHERE quota = $1 AND digest = ANY($2::text[])
    ORDER BY digest FOR KEY SHARE"""
_CHARGE = """
    INSERT INTO quota_blobs (quota, digest, size)
    SELECT $1, digest, size FROM blobs WHERE digest = ANY($2::text[]) ORDER BY digest
    ON CONFLICT DO NOTHING RETURNING size"""
_LOCK_SHARD_ZERO = "SELECT bytes FROM quota_usage WHERE quota = $1 AND shard = 0 FOR UPDATE"
# The quota's charged bytes with this push's added (shard 0 is locked by the caller).
_ADD_BYTES = """
    WITH added AS (
        UPDATE quota_usage SET bytes = bytes + $2 WHERE quota = $1 AND shard = 0
        RETURNING bytes
    )
    SELECT (SELECT bytes FROM added)
        + (SELECT coalesce(sum(bytes), 0) FROM quota_usage WHERE quota = $1 AND shard <> 0)"""
_TAGS_IN_QUOTA = """
    SELECT count(*) FROM quota_repositories qr JOIN tags t ON t.repository_id = qr.repository_id
    WHERE qr.quota = $1"""
_LOCK_UNCHARGE = """
    SELECT qb.quota, qb.size FROM quota_repositories qr
    JOIN quota_blobs qb ON qb.quota = qr.quota AND qb.digest = $2
    WHERE qr.repository_id = $1 ORDER BY qb.quota FOR UPDATE OF qb"""
_LINKED_IN_QUOTA = """
    SELECT EXISTS (SELECT FROM repository_blobs rb
        JOIN quota_repositories qr ON qr.repository_id = rb.repository_id
        WHERE qr.quota = $1 AND rb.digest = $2)"""
_COMPUTE_CHARGES = """
    INSERT INTO quota_blobs (quota, digest, size)
    SELECT DISTINCT qr.quota, rb.digest, b.size FROM quota_repositories qr
    JOIN repository_blobs rb ON rb.repository_id = qr.repository_id
    JOIN blobs b ON b.digest = rb.digest
    WHERE qr.quota = $1 AND EXISTS (SELECT FROM manifest_references mr
        WHERE mr.repository_id = rb.repository_id AND mr.digest = rb.digest
        AND mr.kind = 'blob')
    ON CONFLICT DO NOTHING"""
_USAGE = """
    SELECT k.key, (SELECT sum(bytes) FROM quota_usage u WHERE u.quota = k.key),
        (SELECT count(*) FROM quota_repositories qr JOIN tags t
            ON t.repository_id = qr.repository_id WHERE qr.quota = k.key),
        (SELECT count(*) FROM quota_repositories qr WHERE qr.quota = k.key)
    FROM unnest($1::text[]) WITH ORDINALITY AS k (key, position) ORDER BY k.position"""


class PostgresQuotas:
    if TYPE_CHECKING:

        def _run(
            self, work: Callable[[Connection], Awaitable[T]], *, transaction: bool = False
        ) -> Awaitable[T]: ...

        async def _fetch(self, sql: str, *args: object) -> list[Any]: ...

    async def _enforce_quotas(
        self,
        conn: Connection,
        repo_id: int,
        manifest: ManifestRecord,
        new_tags: int,
        checks: Sequence[QuotaCheck],
    ) -> None:
        """In put_manifest's transaction, after it wrote the manifest and its tags (`new_tags`
        of them created): charge the referenced blobs new to each quota, or raise
        QuotaExceeded (the transaction then rolls back)."""
        blobs = sorted(set(manifest.blob_references))
        for check in sorted(checks, key=lambda c: c.key):
            key = check.key
            await conn.execute(
                "INSERT INTO quota_repositories (quota, repository_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                key,
                repo_id,
            )
            charged = {r[0] for r in await conn.fetch(_LOCK_CHARGED, key, blobs)}
            new = [d for d in blobs if d not in charged]
            if not new and not new_tags:
                continue  # adds nothing: no lock
            if await conn.fetchval(_LOCK_SHARD_ZERO, key) is None:
                raise QuotaNotSetUp(key)
            new_bytes = 0
            if new:
                # Charged meanwhile by a push that held shard 0 before this one.
                charged = {r[0] for r in await conn.fetch(_LOCK_CHARGED, key, new)}
                new = [d for d in new if d not in charged]
                new_bytes = sum(int(r[0]) for r in await conn.fetch(_CHARGE, key, new))
            if new_bytes:
                used = await conn.fetchval(_ADD_BYTES, key, new_bytes)
                if check.max_bytes is not None and used > check.max_bytes:
                    raise QuotaExceeded(key, "storage", int(used), check.max_bytes)
            if new_tags and check.max_tags is not None:
                count = await conn.fetchval(_TAGS_IN_QUOTA, key)
                if count > check.max_tags:
                    raise QuotaExceeded(key, "tags", int(count), check.max_tags)

    async def _uncharge_link(self, conn: Connection, repo_id: int, digest: str) -> None:
        """After a link is removed, in its transaction: the blob stops counting for each quota
        of the repository that no other of its repositories links it into."""
        # A set-up computes a quota's charges from one snapshot of the links and commits them
        # later: an uncharge committing in between would find no charge to remove, and the
        # blob would stay charged for good. Shared, this lock never makes uncharges wait for
        # one another, only for a set-up, which in turn waits for the uncharges holding it
        # (their link deletes are then in its snapshot). Taken before locking any quota row,
        # in a statement of its own, so that the next statement sees what the set-up wrote.
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *SET_UP_LOCK)
        for quota, size in await conn.fetch(_LOCK_UNCHARGE, repo_id, digest):
            if await conn.fetchval(_LINKED_IN_QUOTA, quota, digest):
                continue
            await conn.execute(
                "DELETE FROM quota_blobs WHERE quota = $1 AND digest = $2", quota, digest
            )
            await conn.execute(
                "UPDATE quota_usage SET bytes = bytes - $2 WHERE quota = $1 AND shard = $3",
                quota,
                size,
                uncharge_shard(digest),
            )

    async def set_up_quotas(
        self, covers: Mapping[str, Callable[[str], bool]], *, drop_others: bool = False
    ) -> list[str]:
        async def state(conn: Connection) -> tuple[set[str], set[str]]:
            known = await conn.fetch("SELECT DISTINCT quota FROM quota_usage")
            recorded = await conn.fetch("SELECT DISTINCT quota FROM quota_repositories")
            return {r[0] for r in known}, {r[0] for r in recorded}

        def others(known: set[str], recorded: set[str]) -> list[str]:
            return sorted((known | recorded) - set(covers)) if drop_others else []

        known, recorded = await self._run(state)
        if set(covers) <= known and not others(known, recorded):
            return []  # the usual start: nothing to do

        async def txn(conn: Connection) -> list[str]:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *SET_UP_LOCK)
            present, recorded = await state(conn)
            gone = others(present, recorded)
            for table in ("quota_usage", "quota_blobs", "quota_repositories"):
                await conn.execute(f"DELETE FROM {table} WHERE quota = ANY($1::text[])", gone)
            created = []
            repositories = await conn.fetch("SELECT id, name FROM repositories")
            for key, cover in covers.items():
                if key in present:
                    continue
                members = [int(r[0]) for r in repositories if cover(r[1])]
                await conn.execute(
                    "INSERT INTO quota_repositories (quota, repository_id)"
                    " SELECT $1, id FROM unnest($2::bigint[]) AS id ON CONFLICT DO NOTHING",
                    key,
                    members,
                )
                await conn.execute("DELETE FROM quota_blobs WHERE quota = $1", key)
                await conn.execute(_COMPUTE_CHARGES, key)
                await conn.execute(
                    "INSERT INTO quota_usage (quota, shard, bytes)"
                    " SELECT $1, shard, CASE WHEN shard = 0 THEN (SELECT coalesce(sum(size), 0)"
                    " FROM quota_blobs WHERE quota = $1) ELSE 0 END"
                    " FROM generate_series(0, $2 - 1) AS shard",
                    key,
                    USAGE_SHARDS,
                )
                created.append(key)
            return created

        created: list[str] = await self._run(txn, transaction=True)
        return created

    async def quota_usage(self, keys: Sequence[str]) -> list[QuotaUsage]:
        rows = await self._fetch(_USAGE, list(keys))
        return [
            QuotaUsage(key, int(used), int(tags), int(repositories))
            for key, used, tags, repositories in rows
            if used is not None
        ]
