"""Retention policy bookkeeping of the SQLite store (see cargobay.lifecycle.retention).

Every write transaction holds SQLite's one write lock, so each conditional delete checks and
deletes with no push in between: a push that tagged the manifest, moved the tag, or stored an
index referencing the manifest committed either wholly before the check or after the delete.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from cargobay.metadata.base import (
    PULL_TIME_PRECISION,
    ManifestState,
    Pull,
    RepositoryState,
    TagState,
)

T = TypeVar("T")

# Nothing keeps the manifest: no tag, no index referencing it, no subject in the repository,
# and (given a cutoff ?3) no push or pull since the cutoff.
_UNUSED = """
    SELECT NOT EXISTS (SELECT 1 FROM tags WHERE repository_id = ?1 AND digest = ?2)
        AND NOT EXISTS (SELECT 1 FROM manifest_references
            WHERE repository_id = ?1 AND digest = ?2 AND kind = 'manifest')
        AND NOT EXISTS (SELECT 1 FROM manifests m JOIN manifests s
            ON s.repository_id = m.repository_id AND s.digest = m.subject
            WHERE m.repository_id = ?1 AND m.digest = ?2)
        AND (?3 IS NULL OR EXISTS (SELECT 1 FROM manifests WHERE repository_id = ?1
            AND digest = ?2 AND created_at < ?3 AND (pulled_at IS NULL OR pulled_at < ?3)))"""
_RECORD_PULL = """
    UPDATE manifests SET pulled_at = ?3
    WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1) AND digest = ?2
        AND (pulled_at IS NULL OR pulled_at < ?3 - ?4)"""


class SQLiteRetention:
    if TYPE_CHECKING:

        @property
        def _db(self) -> sqlite3.Connection: ...

        def _transaction(
            self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
        ) -> Awaitable[T]: ...

        @staticmethod
        def _repository_id(
            db: sqlite3.Connection, name: str, *, create: bool = False
        ) -> int | None: ...

        @staticmethod
        def _delete_manifest(db: sqlite3.Connection, repo_id: int, digest: str) -> bool: ...

        @staticmethod
        def _delete_tag(
            db: sqlite3.Connection,
            repository: str,
            tag: str,
            digest: str | None = None,
            pushed_at: float | None = None,
        ) -> bool: ...

    async def repository_state(self, repository: str) -> RepositoryState:
        db = self._db
        db.execute("BEGIN")  # one snapshot for the three reads
        try:
            repo_id = self._repository_id(db, repository)
            tags = [
                TagState(row[0], row[1], float(row[2]))
                for row in db.execute(
                    "SELECT name, digest, updated_at FROM tags WHERE repository_id = ?",
                    (repo_id,),
                )
            ]
            manifests = [
                ManifestState(row[0], float(row[1]), row[2], row[3])
                for row in db.execute(
                    "SELECT digest, created_at, pulled_at, subject FROM manifests"
                    " WHERE repository_id = ?",
                    (repo_id,),
                )
            ]
            children = [
                (row[0], row[1])
                for row in db.execute(
                    "SELECT manifest_digest, digest FROM manifest_references"
                    " WHERE repository_id = ? AND kind = 'manifest'",
                    (repo_id,),
                )
            ]
        finally:
            db.execute("COMMIT")
        return RepositoryState(tags, manifests, children)

    async def delete_tag_if(
        self, repository: str, tag: str, digest: str, pushed_at: float | None = None
    ) -> bool:
        return await self._transaction(
            lambda db: self._delete_tag(db, repository, tag, digest, pushed_at)
        )

    async def delete_manifest_if_untagged(
        self, repository: str, digest: str, pushed_before: float | None = None
    ) -> bool:
        def txn(db: sqlite3.Connection) -> bool:
            repo_id = self._repository_id(db, repository)
            args = (repo_id, digest, pushed_before)
            if repo_id is None or not db.execute(_UNUSED, args).fetchone()[0]:
                return False
            return self._delete_manifest(db, repo_id, digest)

        return await self._transaction(txn)

    async def record_pulls(self, pulls: Sequence[Pull]) -> None:
        if not pulls:
            return

        def txn(db: sqlite3.Connection) -> None:
            db.executemany(
                _RECORD_PULL,
                [(p.repository, p.digest, p.at, PULL_TIME_PRECISION) for p in pulls],
            )

        await self._transaction(txn, durable=False)
