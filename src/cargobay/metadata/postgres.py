"""Metadata in PostgreSQL, shared by any number of registry instances and their workers.

Each worker creates its asyncpg pool lazily, inside its event loop: nothing connected crosses the
fork. asyncpg prepares and caches each statement per connection; a read is one round trip.

Concurrency (READ COMMITTED):
- put_manifest runs in one transaction that first locks the blob links and child manifests it
  references with SELECT ... FOR KEY SHARE (what a foreign key check takes). A concurrent
  unlink_blob or delete_manifest either commits first, and put_manifest waits for it, finds the
  row gone and raises MissingReferences; or it waits until the manifest is stored. Tags and
  references point at their manifest by foreign keys with ON DELETE CASCADE: a tag never
  outlives its manifest. Tags are written in sorted order, so puts moving the same tags lock
  them in the same order; deadlocks and serialization failures are retried all the same.
  Fixed (immutable) tags are checked by the tag upsert itself (see _STORE_MANIFEST), so that
  of concurrent first pushes of one such tag exactly one wins.
- mount_blob locks the source's blob link FOR KEY SHARE in the transaction that links the
  blob into the target: an unlink from the source comes wholly before (nothing is mounted) or
  after the mount.
- lock_upload takes a session advisory lock (pg_try_advisory_lock on 64 bits of the upload id's
  SHA-256) on one dedicated connection per process, not a pooled one: a request holds the lock
  while its client streams a chunk, and hundreds of uploads must not pin as many connections.
  Advisory locks are reentrant within a session, so a set of held keys keeps requests of one
  process apart. The server releases the locks when the process or the connection dies; a
  request that lost its lock that way is still stopped by update_upload's compare-and-set.

Connection failures of every kind (refused, lost mid-query, too many connections, timeouts,
shutdown) raise cargobay.errors.Unavailable (503). The pool replaces broken connections on the
next acquire, so the store recovers by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from typing import Any, TypeVar

import asyncpg

from cargobay.errors import Unavailable
from cargobay.metadata.base import (
    ApiTokenRecord,
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    QuotaCheck,
    Referrer,
    StoreStatistics,
    TagFixed,
    UploadLocked,
    UploadRecord,
    wait_for_lock,
)
from cargobay.metadata.postgres_gc import PostgresGarbageCollection
from cargobay.metadata.postgres_quota import PostgresQuotas
from cargobay.metadata.postgres_retention import PostgresRetention
from cargobay.metadata.postgres_schema import MIGRATIONS

T = TypeVar("T")
Connection = Any  # asyncpg ships no type information
Record = Any

log = logging.getLogger("cargobay")

CONNECT_TIMEOUT = 5.0
ACQUIRE_TIMEOUT = 10.0  # waiting for a free pooled connection, connecting included
COMMAND_TIMEOUT = 30.0  # per statement: a hung server must not hang requests forever
CLOSE_TIMEOUT = 10.0
RETRIES = 3  # transactions that lost a deadlock or serialization race
# Advisory locks: migrations use the (int, int) key space, uploads the bigint one; they are
# disjoint, so the two can never collide.
MIGRATION_LOCK = (0x63617267, 0x6F626179)
CONNECT_ARGS: dict[str, Any] = {
    "timeout": CONNECT_TIMEOUT,
    "server_settings": {
        "application_name": "cargobay",
        # The server notices a vanished client (host down, network split) within about two
        # minutes and releases its upload locks, instead of after the OS default of two hours.
        "tcp_keepalives_idle": "60",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "6",
    },
}

# "The database cannot serve now": never a bug of ours, so a retryable 503 rather than a 500.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, name resolution
    TimeoutError,  # connect, pool acquire, statement
    asyncpg.PostgresConnectionError,  # class 08, including a connection lost mid-query
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.OperatorInterventionError,  # class 57: shutting down, starting up, terminated
    asyncpg.InvalidAuthorizationSpecificationError,  # wrong user or password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.ReadOnlySQLTransactionError,  # a standby, during a failover
)

_MANIFEST_COLUMNS = "m.digest, m.media_type, m.content, m.artifact_type, m.subject, m.annotations"
_UPLOAD_COLUMNS = "id, repository, algorithm, size, hash_state, created_at, updated_at"
_TOKEN_COLUMNS = "id, name, secret_hash, scopes, created_at, revoked_at, kind"
_REPOSITORY_ID = "(SELECT id FROM repositories WHERE name = $1)"

# One round trip whether the repository exists or not. No row: another transaction created it
# concurrently (ON CONFLICT waited for it to commit); reading it again then finds it.
_GET_OR_CREATE_REPOSITORY = """
    WITH found AS (SELECT id FROM repositories WHERE name = $1),
    created AS (
        INSERT INTO repositories (name, created_at) SELECT $1, $2::double precision
        WHERE NOT EXISTS (SELECT FROM found)
        ON CONFLICT (name) DO NOTHING RETURNING id
    )
    SELECT id FROM found UNION ALL SELECT id FROM created"""

# A blob row locked against a collector deleting it (which locks it FOR UPDATE).
_LOCK_BLOB_ROW = "SELECT size FROM blobs WHERE digest = $1 FOR KEY SHARE"
_LINK_BLOB = """
    WITH blob AS (
        INSERT INTO blobs (digest, size, created_at)
        SELECT $2::text, $3::bigint, $4::double precision WHERE $5::boolean
        ON CONFLICT (digest) DO NOTHING
    )
    INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $4)
    ON CONFLICT DO NOTHING"""
_REVIEW_LINK = """
    INSERT INTO gc_link_reviews (repository_id, digest, since) VALUES ($1, $2, $3)
    ON CONFLICT (repository_id, digest) DO UPDATE SET since = excluded.since"""
_LINKED_BLOB = """
    SELECT b.size, rb.repository_id, (SELECT since FROM gc_link_reviews g
        WHERE g.repository_id = rb.repository_id AND g.digest = rb.digest)
    FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id
    JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 AND rb.digest = $2"""

# The source's link of a mount, locked against a concurrent unlink until the mount commits.
_LOCK_SOURCE_LINK = """
    SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
    WHERE rb.repository_id = (SELECT id FROM repositories WHERE name = $1) AND rb.digest = $2
    FOR KEY SHARE OF rb"""

# FOR KEY SHARE conflicts with DELETE: a concurrent unlink or delete waits for this transaction.
_LOCK_REFERENCES = """
    WITH b AS (
        SELECT digest FROM repository_blobs WHERE repository_id = $1 AND digest = ANY($2::text[])
        FOR KEY SHARE
    ), m AS (
        SELECT digest FROM manifests WHERE repository_id = $1 AND digest = ANY($3::text[])
        FOR KEY SHARE
    )
    SELECT ARRAY(SELECT digest FROM b), ARRAY(SELECT digest FROM m)"""

# The manifest, its references and its tags in one statement; the foreign key checks of the
# references and tags run at its end, when the manifest row is there. It returns the tags it
# wrote: a fixed tag ($12) that points at another manifest is left as it is and missing from
# them. The check must be this upsert's WHERE, not a SELECT ... FOR UPDATE of the tag rows
# before it: under READ COMMITTED, FOR UPDATE locks only rows that exist, so two first pushes
# of one tag would both find none and the second upsert would then move the first's tag. The
# upsert instead waits for a concurrent insert of the same tag to commit, then evaluates the
# WHERE against that committed row (and locks it, updated or not).
_STORE_MANIFEST = """
    WITH manifest AS (
        INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject,
            annotations, content, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (repository_id, digest) DO UPDATE SET media_type = excluded.media_type,
            artifact_type = excluded.artifact_type, subject = excluded.subject,
            annotations = excluded.annotations, created_at = excluded.created_at
    ), refs AS (
        INSERT INTO manifest_references (repository_id, manifest_digest, digest, kind)
        SELECT $1, $2, r.digest, r.kind FROM unnest($9::text[], $10::text[]) AS r (digest, kind)
        ON CONFLICT DO NOTHING
    )
    INSERT INTO tags (repository_id, name, digest, updated_at)
    SELECT $1, t.name, $2, $8 FROM unnest($11::text[]) AS t (name) ORDER BY t.name
    ON CONFLICT (repository_id, name) DO UPDATE SET
        digest = excluded.digest, updated_at = excluded.updated_at
        WHERE tags.digest = excluded.digest OR NOT tags.name = ANY($12::text[])
    RETURNING name, xmax = 0 AS created"""


class PostgresMetadataStore(
    PostgresRetention, PostgresGarbageCollection, PostgresQuotas, MetadataStore
):
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pid = 0
        self._pool: Any = None
        self._lock_conn: Connection | None = None  # upload locks of this process
        self._lock_mutex = asyncio.Lock()
        self._held: set[int] = set()
        self._releasing: set[asyncio.Task[None]] = set()
        self._last_warning = 0.0

    # -- connections ---------------------------------------------------------------------------
    def _this_process(self) -> None:
        if self._pid != os.getpid():  # a parent's connections are not ours to use
            self._pid = os.getpid()
            self._pool = self._lock_conn = None
            self._lock_mutex = asyncio.Lock()
            self._held = set()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        self._this_process()
        with self._failures():
            if self._pool is None:
                # min_size=0: creating the pool connects nothing, so it cannot fail (or yield to
                # another task); connections are opened on demand and reopened when broken.
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=0,
                    max_size=self.pool_size,
                    command_timeout=COMMAND_TIMEOUT,
                    reset=_keep_session,
                    **CONNECT_ARGS,
                )
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Connection failures become Unavailable; anything else passes unchanged."""
        try:
            yield
        except Exception as exc:
            # A transaction cannot roll back on a lost connection: asyncpg then raises an
            # InterfaceError with the failure as its context.
            failure = exc.__context__ if isinstance(exc, asyncpg.InterfaceError) else exc
            if not isinstance(failure, UNAVAILABLE_ERRORS):
                raise
            raise self._unavailable(failure) from exc

    def _unavailable(self, failure: BaseException) -> Unavailable:
        now = time.monotonic()
        if now - self._last_warning > 10:  # a line per outage, not one per request
            self._last_warning = now
            log.warning("metadata database unavailable: %s: %s", type(failure).__name__, failure)
        return Unavailable(f"the metadata database is unavailable ({type(failure).__name__})")

    async def _run(
        self, work: Callable[[Connection], Awaitable[T]], *, transaction: bool = False
    ) -> T:
        for attempt in itertools.count(1):
            try:
                async with self._connection() as conn:
                    if not transaction:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
            except asyncpg.TransactionRollbackError as exc:  # deadlock, serialization failure
                if attempt == RETRIES:
                    raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: object) -> list[Record]:
        return list(await self._run(lambda conn: conn.fetch(sql, *args)))

    async def _fetchrow(self, sql: str, *args: object) -> Record | None:
        return await self._run(lambda conn: conn.fetchrow(sql, *args))

    async def _execute(self, sql: str, *args: object) -> int:
        """Run one statement (atomic by itself); returns the number of rows it changed."""
        status = await self._run(lambda conn: conn.execute(sql, *args))
        return int(str(status).rsplit(" ", 1)[-1])

    def migrate(self) -> None:
        # Called before any event loop exists (supervisor, CLI) and from inside a running one
        # (tests): a thread with a loop of its own serves both.
        with ThreadPoolExecutor(1, thread_name_prefix="cargobay-migrate") as executor:
            executor.submit(lambda: asyncio.run(self._migrate())).result()

    async def _migrate(self) -> None:
        with self._failures():
            conn = await asyncpg.connect(self.url, **CONNECT_ARGS)
            try:
                # Instances starting together queue here; the later ones find the work done.
                await conn.execute("SELECT pg_advisory_lock($1, $2)", *MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
                )
                current = await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0
                for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                    async with conn.transaction():
                        for statement in statements:
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time()
                        )
            finally:
                await conn.close(timeout=CLOSE_TIMEOUT)  # also releases the advisory lock

    async def close(self) -> None:
        if self._pid != os.getpid():
            return
        pool, lock_conn, self._pool, self._lock_conn = self._pool, self._lock_conn, None, None
        if lock_conn is not None:
            lock_conn.terminate()  # releases this process's upload locks
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except UNAVAILABLE_ERRORS:
                pool.terminate()

    @staticmethod
    async def _repository_id(conn: Connection, name: str) -> int:
        """The repository's id, created (in the caller's transaction) if new."""
        repo_id = await conn.fetchval(_GET_OR_CREATE_REPOSITORY, name, time.time())
        if repo_id is None:
            repo_id = await conn.fetchval("SELECT id FROM repositories WHERE name = $1", name)
        return int(repo_id)

    # -- repositories --------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._fetchrow("SELECT 1")

    async def statistics(self) -> StoreStatistics:
        row = await self._fetchrow(
            """SELECT (SELECT count(*) FROM repositories), (SELECT count(*) FROM blobs),
                 (SELECT coalesce(sum(size), 0) FROM blobs), (SELECT count(*) FROM manifests),
                 (SELECT count(*) FROM tags), (SELECT count(*) FROM uploads)"""
        )
        assert row is not None  # an aggregate query always returns its one row
        return StoreStatistics(*row)

    async def repository_exists(self, name: str) -> bool:
        return await self._fetchrow("SELECT 1 FROM repositories WHERE name = $1", name) is not None

    async def list_repositories(self, last: str | None, limit: int) -> list[str]:
        sql = "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2"
        return [row[0] for row in await self._fetch(sql, _after(last), limit)]

    # -- blobs ---------------------------------------------------------------------------------
    async def blob_size(self, digest: str) -> int | None:
        row = await self._fetchrow("SELECT size FROM blobs WHERE digest = $1", digest)
        return None if row is None else int(row[0])

    async def list_blobs(self, last: str | None, limit: int) -> list[tuple[str, int]]:
        sql = "SELECT digest, size FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2"
        return [(row[0], int(row[1])) for row in await self._fetch(sql, _after(last), limit)]

    async def linked_blob_size(
        self, repository: str, digest: str, *, keep_for: float | None = None
    ) -> int | None:
        row = await self._fetchrow(_LINKED_BLOB, repository, digest)
        now = time.time()
        if row is None or keep_for is None or row[2] is None or row[2] >= now:
            return None if row is None else int(row[0])

        async def touched(conn: Connection) -> Record | None:
            # Under review: kept for another grace delay. A collector holding the review
            # (about to remove the link) is waited for; reading again then finds it gone.
            sql = "UPDATE gc_link_reviews SET since = $3 WHERE repository_id = $1 AND digest = $2"
            await conn.execute(sql, row[1], digest, now + keep_for)
            return await conn.fetchrow(_LINKED_BLOB, repository, digest)

        found = await self._run(touched)
        return None if found is None else int(found[0])

    async def link_blob(self, repository: str, digest: str, size: int) -> None:
        await self._run(lambda conn: self._link(conn, repository, digest, size), transaction=True)

    async def _link(self, conn: Connection, repository: str, digest: str, size: int) -> None:
        """Link in the caller's transaction: the review (a collector holding it, about to
        remove this link, is waited for), then the blob row (a collector deleting it is
        waited for; the row is then inserted anew), then the link. A mount holds its source
        link FOR KEY SHARE before all of this: links before reviews, as the collector."""
        repo_id = await self._repository_id(conn, repository)
        now = time.time()
        await conn.execute(_REVIEW_LINK, repo_id, digest, now)
        new = await conn.fetchval(_LOCK_BLOB_ROW, digest) is None
        await conn.execute(_LINK_BLOB, repo_id, digest, size, now, new)

    async def link_existing_blob(self, repository: str, digest: str) -> int | None:
        async def txn(conn: Connection) -> int | None:
            size = await conn.fetchval(_LOCK_BLOB_ROW, digest)
            if size is None:
                return None
            await self._link(conn, repository, digest, int(size))
            return int(size)

        if await self.blob_size(digest) is None:
            return None  # the common miss takes no lock
        return await self._run(txn, transaction=True)

    async def mount_blob(self, source: str, repository: str, digest: str) -> int | None:
        async def txn(conn: Connection) -> int | None:
            size = await conn.fetchval(_LOCK_SOURCE_LINK, source, digest)
            if size is None:
                return None
            await self._link(conn, repository, digest, int(size))
            return int(size)

        return await self._run(txn, transaction=True)

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        async def txn(conn: Connection) -> bool:
            # The link, then its review: the collector's lock order (postgres_gc.py).
            repo_id = await conn.fetchval(
                f"DELETE FROM repository_blobs WHERE repository_id = {_REPOSITORY_ID}"
                " AND digest = $2 RETURNING repository_id",
                repository,
                digest,
            )
            if repo_id is None:
                return False
            await conn.execute(
                "DELETE FROM gc_link_reviews WHERE repository_id = $1 AND digest = $2",
                repo_id,
                digest,
            )
            await conn.execute(
                "INSERT INTO gc_blob_reviews (digest, since) VALUES ($1, $2)"
                " ON CONFLICT (digest) DO UPDATE SET since = excluded.since",
                digest,
                time.time(),
            )
            await self._uncharge_link(conn, repo_id, digest)
            return True

        return await self._run(txn, transaction=True)

    # -- manifests and tags --------------------------------------------------------------------
    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        sql = (
            f"SELECT {_MANIFEST_COLUMNS} FROM repositories r"
            " JOIN manifests m ON m.repository_id = r.id WHERE r.name = $1 AND m.digest = $2"
        )
        row = await self._fetchrow(sql, repository, digest)
        return None if row is None else _manifest(row)

    async def get_tagged_manifest(self, repository: str, tag: str) -> ManifestRecord | None:
        sql = (
            f"SELECT {_MANIFEST_COLUMNS} FROM repositories r JOIN tags t ON t.repository_id = r.id"
            " JOIN manifests m ON m.repository_id = r.id AND m.digest = t.digest"
            " WHERE r.name = $1 AND t.name = $2"
        )
        row = await self._fetchrow(sql, repository, tag)
        return None if row is None else _manifest(row)

    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        tags: Sequence[str],
        *,
        fixed_tags: Sequence[str] = (),
        quota_checks: Sequence[QuotaCheck] = (),
    ) -> None:
        fixed = sorted(set(tags) & set(fixed_tags))
        blobs = sorted(set(manifest.blob_references))
        children = sorted(set(manifest.manifest_references))
        m = manifest
        annotations = json.dumps(m.annotations) if m.annotations else None
        values = (m.digest, m.media_type, m.artifact_type, m.subject, annotations, m.content)
        graph = (blobs + children, ["blob"] * len(blobs) + ["manifest"] * len(children))

        async def txn(conn: Connection) -> None:
            repo_id = await self._repository_id(conn, repository)
            if blobs or children:
                found = await conn.fetchrow(_LOCK_REFERENCES, repo_id, blobs, children)
                missing_blobs = [d for d in blobs if d not in set(found[0])]
                missing_children = [d for d in children if d not in set(found[1])]
                if missing_blobs or missing_children:
                    raise MissingReferences(missing_blobs, missing_children)
            written = await conn.fetch(
                _STORE_MANIFEST, repo_id, *values, time.time(), *graph, sorted(set(tags)), fixed
            )
            moved = sorted(set(fixed) - {row[0] for row in written})
            if moved:
                raise TagFixed(moved[0])  # the transaction rolls back: nothing is stored
            if quota_checks:
                created = sum(1 for row in written if row[1])
                await self._enforce_quotas(conn, repo_id, manifest, created, quota_checks)

        await self._run(txn, transaction=True)

    async def delete_manifest(
        self,
        repository: str,
        digest: str,
        *,
        protected: Callable[[Sequence[str]], Sequence[str]] | None = None,
    ) -> bool:
        async def txn(conn: Connection) -> bool:
            repo_id = await conn.fetchval("SELECT id FROM repositories WHERE name = $1", repository)
            if repo_id is None:
                return False
            if protected is not None:
                # Locked first: a tag being pointed at it (its foreign key check locks the row
                # FOR KEY SHARE) commits before the tags are read below, or waits for the delete.
                await conn.execute(
                    "SELECT FROM manifests WHERE repository_id = $1 AND digest = $2 FOR UPDATE",
                    repo_id,
                    digest,
                )
                rows = await conn.fetch(
                    "SELECT name FROM tags WHERE repository_id = $1 AND digest = $2 ORDER BY name",
                    repo_id,
                    digest,
                )
                kept = protected([row[0] for row in rows])
                if kept:
                    raise TagFixed(kept[0])  # the transaction rolls back
            return await self._delete_manifest(conn, repo_id, digest)

        return await self._run(txn, transaction=True)

    @staticmethod
    async def _delete_manifest(conn: Connection, repo_id: int, digest: str) -> bool:
        """Delete a manifest with its tags, in the caller's transaction. Every way of deleting
        a manifest (the API, retention policies) goes through here."""
        # What it referenced may now be unreferenced: reviewed after the grace delay.
        await conn.execute(
            "INSERT INTO gc_link_reviews (repository_id, digest, since)"
            " SELECT repository_id, digest, $3 FROM manifest_references"
            " WHERE repository_id = $1 AND manifest_digest = $2 AND kind = 'blob'"
            " ORDER BY digest"
            " ON CONFLICT (repository_id, digest) DO UPDATE SET since = excluded.since",
            repo_id,
            digest,
            time.time(),
        )
        # Its tags and references go with it (ON DELETE CASCADE).
        status = await conn.execute(
            "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2", repo_id, digest
        )
        return bool(int(str(status).rsplit(" ", 1)[-1]))

    async def manifest_tags(self, repository: str, digest: str) -> list[str]:
        sql = (
            "SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id"
            " WHERE r.name = $1 AND t.digest = $2 ORDER BY t.name"
        )
        return [row[0] for row in await self._fetch(sql, repository, digest)]

    async def delete_tag(self, repository: str, tag: str) -> bool:
        return await self._run(lambda conn: self._delete_tag(conn, repository, tag))

    @staticmethod
    async def _delete_tag(
        conn: Connection,
        repository: str,
        tag: str,
        digest: str | None = None,
        pushed_at: float | None = None,
    ) -> bool:
        """Delete a tag (only if it points at `digest` and was last pushed at `pushed_at`,
        when given; one statement: a concurrent push is waited for and the condition checked
        against what it wrote). Every way of deleting a tag goes through here."""
        status = await conn.execute(
            f"DELETE FROM tags WHERE repository_id = {_REPOSITORY_ID} AND name = $2"
            " AND digest = coalesce($3::text, digest)"
            " AND updated_at = coalesce($4::double precision, updated_at)",
            repository,
            tag,
            digest,
            pushed_at,
        )
        return int(str(status).rsplit(" ", 1)[-1]) > 0

    async def list_tags(self, repository: str, last: str | None, limit: int) -> list[str]:
        sql = (
            "SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id"
            " WHERE r.name = $1 AND t.name > $2 ORDER BY t.name LIMIT $3"
        )
        return [row[0] for row in await self._fetch(sql, repository, _after(last), limit)]

    async def list_referrers(
        self,
        repository: str,
        subject: str,
        artifact_type: str | None,
        last: str | None,
        limit: int,
    ) -> list[Referrer]:
        sql = (
            "SELECT m.digest, m.media_type, octet_length(m.content), m.artifact_type,"
            " m.annotations FROM repositories r JOIN manifests m ON m.repository_id = r.id"
            " WHERE r.name = $1 AND m.subject = $2 AND m.digest > $3"
            " AND ($4::text IS NULL OR m.artifact_type = $4) ORDER BY m.digest LIMIT $5"
        )
        if artifact_type is not None and "\x00" in artifact_type:
            return []  # PostgreSQL text cannot hold NUL, and no stored artifact type has one
        rows = await self._fetch(sql, repository, subject, _after(last), artifact_type, limit)
        return [
            Referrer(
                digest=digest,
                media_type=media_type,
                size=int(size),
                artifact_type=artifact_type,
                annotations=json.loads(annotations) if annotations else None,
            )
            for digest, media_type, size, artifact_type, annotations in rows
        ]

    # -- uploads -------------------------------------------------------------------------------
    async def create_upload(self, upload: UploadRecord) -> None:
        upload.created_at = upload.updated_at = now = time.time()
        sql = f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        u = upload
        await self._execute(sql, u.id, u.repository, u.algorithm, u.size, u.hash_state, now, now)

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = $1"
        row = await self._fetchrow(sql, upload_id)
        return None if row is None else UploadRecord(*row)

    async def update_upload(
        self, upload_id: str, expected_size: int, size: int, hash_state: bytes | None
    ) -> bool:
        sql = (
            "UPDATE uploads SET size = $3, hash_state = $4, updated_at = $5"
            " WHERE id = $1 AND size = $2"
        )
        args = (upload_id, expected_size, size, hash_state, time.time())
        return await self._execute(sql, *args) > 0

    def lock_upload(self, upload_id: str) -> AbstractAsyncContextManager[None]:
        return self._advisory_lock(upload_id)

    @asynccontextmanager
    async def lock_blob(self, digest: str) -> AsyncIterator[None]:
        async with await wait_for_lock(lambda: self._advisory_lock("blob:" + digest), digest):
            yield

    @asynccontextmanager
    async def _advisory_lock(self, name: str) -> AsyncIterator[None]:
        """Hold the session advisory lock on 64 bits of the name's SHA-256; UploadLocked if
        another request (in any process) holds it."""
        self._this_process()
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], signed=True)
        if key in self._held:  # another request of this process holds it
            raise UploadLocked(name)
        self._held.add(key)
        granted: bool | None = None  # None: unknown, the call was cancelled on its way
        try:
            try:
                granted = await self._advisory("SELECT pg_try_advisory_lock($1)", key)
            except Unavailable:
                granted = False  # the connection is gone, and any lock with it
                raise
            if not granted:
                raise UploadLocked(name)
            yield
        finally:
            if granted is False:
                self._held.discard(key)
            else:
                # Shielded: a cancelled request releases the lock all the same. The key stays
                # in _held until then, or a new holder's lock would stack on this one.
                await asyncio.shield(self._release(key))

    def _release(self, key: int) -> asyncio.Task[None]:
        async def release() -> None:
            try:
                with suppress(Unavailable):  # a broken connection released it already
                    await self._advisory("SELECT pg_advisory_unlock($1)", key)
            finally:
                self._held.discard(key)

        task = asyncio.ensure_future(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        return task

    async def _advisory(self, sql: str, key: int) -> bool:
        """Call an advisory lock function on this process's lock connection, (re)connecting it
        as needed; one call at a time, as on any asyncpg connection."""
        async with self._lock_mutex:
            with self._failures():
                try:
                    if self._lock_conn is None or self._lock_conn.is_closed():
                        self._lock_conn = await asyncpg.connect(
                            self.url, command_timeout=COMMAND_TIMEOUT, **CONNECT_ARGS
                        )
                    return bool(await self._lock_conn.fetchval(sql, key))
                except Exception:
                    if self._lock_conn is not None:  # broken or in doubt: its locks go with it
                        self._lock_conn.terminate()
                        self._lock_conn = None
                    raise

    async def delete_upload(self, upload_id: str) -> bool:
        return await self._execute("DELETE FROM uploads WHERE id = $1", upload_id) > 0

    async def complete_upload(self, upload: UploadRecord, digest: str, size: int) -> None:
        async def txn(conn: Connection) -> None:
            await self._link(conn, upload.repository, digest, size)
            # The bytes were just put in place (under lock_blob): a collection decided
            # before must not delete them.
            await conn.execute("DELETE FROM gc_tombstones WHERE digest = $1", digest)
            await conn.execute("DELETE FROM uploads WHERE id = $1", upload.id)

        await self._run(txn, transaction=True)

    async def list_uploads_older_than(self, timestamp: float) -> list[UploadRecord]:
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE updated_at < $1 ORDER BY updated_at"
        return [UploadRecord(*row) for row in await self._fetch(sql, timestamp)]

    # -- API tokens ----------------------------------------------------------------------------
    async def create_api_token(self, token: ApiTokenRecord) -> None:
        sql = f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL, $6)"
        scopes = json.dumps([[pattern, list(actions)] for pattern, actions in token.scopes])
        created = token.created_at or time.time()
        await self._execute(
            sql, token.id, token.name, token.secret_hash, scopes, created, token.kind
        )

    async def get_api_token(self, token_id: str) -> ApiTokenRecord | None:
        row = await self._fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = $1", token_id
        )
        return None if row is None else _api_token(row)

    async def list_api_tokens(self) -> list[ApiTokenRecord]:
        rows = await self._fetch(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at")
        return [_api_token(row) for row in rows]

    async def revoke_api_token(self, token_id: str) -> bool:
        sql = "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
        return await self._execute(sql, token_id, time.time()) > 0


async def _keep_session(conn: Connection) -> None:
    """Skip asyncpg's reset query, a round trip per release: pooled connections never change
    session state. (asyncpg still rolls back a transaction left open.)"""


def _manifest(row: Record) -> ManifestRecord:
    digest, media_type, content, artifact_type, subject, annotations = row
    return ManifestRecord(
        digest=digest,
        media_type=media_type,
        content=bytes(content),
        artifact_type=artifact_type,
        subject=subject,
        annotations=json.loads(annotations) if annotations else None,
    )


def _api_token(row: Record) -> ApiTokenRecord:
    token_id, name, secret_hash, scopes, created_at, revoked_at, kind = row
    return ApiTokenRecord(
        id=token_id,
        name=name,
        secret_hash=bytes(secret_hash),
        scopes=tuple((pattern, tuple(actions)) for pattern, actions in json.loads(scopes)),
        created_at=created_at,
        revoked_at=revoked_at,
        kind=kind,
    )


def _after(last: str | None) -> str:
    """A pagination marker PostgreSQL can take. Text cannot hold NUL; as no name, tag or digest
    contains one, the names after "abc\\x00..." in byte order are exactly those after "abc"."""
    return (last or "").split("\x00", 1)[0]
