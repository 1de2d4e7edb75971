"""Retention policy bookkeeping of the PostgreSQL store (see cargobay.lifecycle.retention).

A conditional manifest delete runs in one READ COMMITTED transaction that first locks the
manifest row FOR UPDATE, then checks in a new statement that nothing keeps it. Every push that
could keep it locks that row too: a push of the manifest itself (to tag it, or again by digest,
which refreshes its push time) upserts the row, and an index push locks its children FOR KEY
SHARE. So such a push either commits first, and the check sees its tag, reference or push
time, or waits, and then finds the manifest gone (an index push then fails with
MANIFEST_BLOB_UNKNOWN, as after any delete). A conditional tag delete is one statement whose
WHERE is evaluated again on a row a concurrent push moved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cargobay.metadata.base import (
    PULL_TIME_PRECISION,
    ManifestState,
    Pull,
    RepositoryState,
    TagState,
)

T = TypeVar("T")
Connection = Any

_UNUSED = """
    SELECT NOT EXISTS (SELECT FROM tags WHERE repository_id = $1 AND digest = $2)
        AND NOT EXISTS (SELECT FROM manifest_references
            WHERE repository_id = $1 AND digest = $2 AND kind = 'manifest')
        AND NOT EXISTS (SELECT FROM manifests s WHERE s.repository_id = $1 AND s.digest = $3)
        AND ($4::float8 IS NULL OR EXISTS (SELECT FROM manifests WHERE repository_id = $1
            AND digest = $2 AND created_at < $4 AND (pulled_at IS NULL OR pulled_at < $4)))"""
# Rows are locked in one order (repository, digest), so concurrent flushes never deadlock.
_RECORD_PULLS = """
    WITH pulled AS (
        SELECT r.id AS repository_id, p.digest, max(p.at) AS at
        FROM unnest($1::text[], $2::text[], $3::float8[]) AS p (repository, digest, at)
        JOIN repositories r ON r.name = p.repository
        GROUP BY r.id, p.digest
    ), locked AS (
        SELECT m.repository_id, m.digest, pulled.at FROM manifests m
        JOIN pulled ON pulled.repository_id = m.repository_id AND pulled.digest = m.digest
        WHERE m.pulled_at IS NULL OR m.pulled_at < pulled.at - $4
        ORDER BY m.repository_id, m.digest
        FOR NO KEY UPDATE OF m
    )
    UPDATE manifests m SET pulled_at = locked.at FROM locked
    WHERE m.repository_id = locked.repository_id AND m.digest = locked.digest"""


class PostgresRetention:
    if TYPE_CHECKING:

        def _run(
            self, work: Callable[[Connection], Awaitable[T]], *, transaction: bool = False
        ) -> Awaitable[T]: ...

        async def _execute(self, sql: str, *args: object) -> int: ...

        @staticmethod
        async def _delete_manifest(conn: Connection, repo_id: int, digest: str) -> bool: ...

        @staticmethod
        async def _delete_tag(
            conn: Connection,
            repository: str,
            tag: str,
            digest: str | None = None,
            pushed_at: float | None = None,
        ) -> bool: ...

    async def repository_state(self, repository: str) -> RepositoryState:
        async def read(conn: Connection) -> RepositoryState:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                repo_id = await conn.fetchval(
                    "SELECT id FROM repositories WHERE name = $1", repository
                )
                tags = await conn.fetch(
                    "SELECT name, digest, updated_at FROM tags WHERE repository_id = $1", repo_id
                )
                manifests = await conn.fetch(
                    "SELECT digest, created_at, pulled_at, subject FROM manifests"
                    " WHERE repository_id = $1",
                    repo_id,
                )
                children = await conn.fetch(
                    "SELECT manifest_digest, digest FROM manifest_references"
                    " WHERE repository_id = $1 AND kind = 'manifest'",
                    repo_id,
                )
            return RepositoryState(
                [TagState(r[0], r[1], float(r[2])) for r in tags],
                [ManifestState(r[0], float(r[1]), r[2], r[3]) for r in manifests],
                [(r[0], r[1]) for r in children],
            )

        return await self._run(read)

    async def delete_tag_if(
        self, repository: str, tag: str, digest: str, pushed_at: float | None = None
    ) -> bool:
        return await self._run(
            lambda conn: self._delete_tag(conn, repository, tag, digest, pushed_at)
        )

    async def delete_manifest_if_untagged(
        self, repository: str, digest: str, pushed_before: float | None = None
    ) -> bool:
        async def txn(conn: Connection) -> bool:
            repo_id = await conn.fetchval("SELECT id FROM repositories WHERE name = $1", repository)
            if repo_id is None:
                return False
            locked = await conn.fetchrow(
                "SELECT subject FROM manifests WHERE repository_id = $1 AND digest = $2 FOR UPDATE",
                repo_id,
                digest,
            )
            if locked is None:
                return False
            if not await conn.fetchval(_UNUSED, repo_id, digest, locked[0], pushed_before):
                return False
            return await self._delete_manifest(conn, repo_id, digest)

        return await self._run(txn, transaction=True)

    async def record_pulls(self, pulls: Sequence[Pull]) -> None:
        if pulls:
            await self._execute(
                _RECORD_PULLS,
                [p.repository for p in pulls],
                [p.digest for p in pulls],
                [p.at for p in pulls],
                PULL_TIME_PRECISION,
            )
