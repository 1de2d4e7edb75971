"""Metadata in SQLite (WAL mode), for a registry on one machine.

Each worker process opens its own connection. Queries run synchronously on the event loop: an
indexed lookup takes microseconds, far less than handing it to a thread and back. Writes take
the database lock with BEGIN IMMEDIATE so that concurrent writers in other workers queue on
`busy_timeout` instead of failing on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TypeVar

from cargobay.errors import StorageFull, Unavailable
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
)
from cargobay.metadata.sqlite_gc import SQLiteGarbageCollection
from cargobay.metadata.sqlite_quota import SQLiteQuotas
from cargobay.metadata.sqlite_retention import SQLiteRetention
from cargobay.metadata.sqlite_schema import MIGRATIONS

T = TypeVar("T")

CHECKPOINT_INTERVAL = 1.0  # seconds between WAL checkpoints of a worker that writes

_MANIFEST_COLUMNS = "m.digest, m.media_type, m.content, m.artifact_type, m.subject, m.annotations"
_LINKED_BLOB_SIZE = (
    "SELECT b.size, rb.repository_id, (SELECT since FROM gc_link_reviews g"
    " WHERE g.repository_id = rb.repository_id AND g.digest = rb.digest)"
    " FROM repositories r"
    " JOIN repository_blobs rb ON rb.repository_id = r.id"
    " JOIN blobs b ON b.digest = rb.digest"
    " WHERE r.name = ? AND rb.digest = ?"
)
# Queue a link for garbage collection review, or push its review back to now.
REVIEW_LINK = (
    "INSERT INTO gc_link_reviews (repository_id, digest, since) VALUES (?, ?, ?)"
    " ON CONFLICT (repository_id, digest) DO UPDATE SET since = excluded.since"
)
REVIEW_BLOB = (
    "INSERT INTO gc_blob_reviews (digest, since) VALUES (?, ?)"
    " ON CONFLICT (digest) DO UPDATE SET since = excluded.since"
)


def write_transaction(
    db: sqlite3.Connection,
    write_lock: int,
    synchronous: str,
    durable: bool,
    work: Callable[[sqlite3.Connection], T],
) -> T:
    """Run `work` in one IMMEDIATE transaction, queued behind the database's write lock file.

    Writers of all workers (and the webhook queue, which shares the file) queue on an flock
    before SQLite's own lock: SQLite's busy handler polls with sleeps of up to 100 ms, which let
    one worker's writer win again and again (p99 of concurrent manifest PUTs went to ~280 ms);
    a blocked flock is woken as soon as the holder commits. `durable=False` commits without
    fsync (WAL; the next durable commit syncs it) for bookkeeping whose loss costs a retry."""
    relaxed = not durable and synchronous.upper() in ("FULL", "EXTRA")
    if relaxed:
        db.execute("PRAGMA synchronous=NORMAL")
    fcntl.flock(write_lock, fcntl.LOCK_EX)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException as exc:
            # A failed COMMIT (a full disk) may leave the transaction open: without this
            # ROLLBACK every later BEGIN would fail, even once space returns.
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if (
                isinstance(exc, sqlite3.Error)
                and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL
            ):
                raise StorageFull(f"no space left for the metadata database: {exc}") from None
            raise
    finally:
        fcntl.flock(write_lock, fcntl.LOCK_UN)
        if relaxed:
            db.execute(f"PRAGMA synchronous={synchronous}")
    return result


class SQLiteMetadataStore(SQLiteRetention, SQLiteGarbageCollection, SQLiteQuotas, MetadataStore):
    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._locks = self.path.parent / "upload-locks"
        self._conn: sqlite3.Connection | None = None  # reads, on the event loop
        self._pid = 0
        self._writer: ThreadPoolExecutor | None = None  # writes, on one thread
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_pid = 0
        self._write_lock_path = self.path.parent / (self.path.name + ".write-lock")
        self._write_lock = -1
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._last_checkpoint = 0.0

    # -- connection ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoints run on their own thread (see _run), not inside a request's commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    @property
    def _db(self) -> sqlite3.Connection:
        # A connection must never cross a fork: reopen in each worker process.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    async def _transaction(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """Run `work` in a write transaction on this process's writer thread. Waiting for the
        database lock (another worker is writing) and the commit's fsync then block that thread,
        not the event loop serving every other request of this worker."""
        if self._writer is None or self._writer_pid != os.getpid():
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
            self._writer_pid = os.getpid()
            self._writer_conn = self._checkpoint_conn = None
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, self._run, work, durable
        )

    def _run(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        if self._writer_conn is None:
            self._writer_conn = self._connect()
            self._write_lock = os.open(self._write_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        db = self._writer_conn
        result = write_transaction(db, self._write_lock, self.synchronous, durable, work)
        now = time.monotonic()
        if self._checkpointer is not None and now - self._last_checkpoint > CHECKPOINT_INTERVAL:
            self._last_checkpoint = now
            self._checkpointer.submit(self._checkpoint)
        return result

    def _checkpoint(self) -> None:
        """Copy the WAL into the database without waiting for readers or writers. SQLite's
        automatic checkpoint would run inside the commit that crosses 1,000 pages, and with
        synchronous=FULL fsync the database there: a latency spike every few hundred writes."""
        if self._checkpoint_conn is None:
            self._checkpoint_conn = self._connect()
        with suppress(sqlite3.OperationalError):  # another worker is checkpointing
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def migrate(self) -> None:
        conn = self._connect()
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                for statement in script:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                conn.execute("COMMIT")
        finally:
            conn.close()

    async def close(self) -> None:
        if self._writer is not None and self._writer_pid == os.getpid():
            writer_conn = self._writer_conn
            if writer_conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._writer, writer_conn.close)
            self._writer.shutdown()
            if self._checkpointer is not None:
                self._checkpointer.shutdown()
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()
            if self._write_lock >= 0:
                os.close(self._write_lock)
        self._writer, self._writer_conn, self._write_lock = None, None, -1
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    @staticmethod
    def _repository_id(db: sqlite3.Connection, name: str, *, create: bool = False) -> int | None:
        row = db.execute("SELECT id FROM repositories WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        cursor = db.execute(
            "INSERT INTO repositories (name, created_at) VALUES (?, ?)", (name, time.time())
        )
        return int(cursor.lastrowid or 0)

    # -- repositories ----------------------------------------------------------------------------
    async def ping(self) -> None:
        try:
            self._db.execute("SELECT 1 FROM repositories LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"metadata database: {exc}") from None

    async def statistics(self) -> StoreStatistics:
        row = self._db.execute(
            """SELECT (SELECT count(*) FROM repositories), (SELECT count(*) FROM blobs),
                 (SELECT coalesce(sum(size), 0) FROM blobs), (SELECT count(*) FROM manifests),
                 (SELECT count(*) FROM tags), (SELECT count(*) FROM uploads)"""
        ).fetchone()
        return StoreStatistics(*row)

    async def repository_exists(self, name: str) -> bool:
        return self._repository_id(self._db, name) is not None

    async def list_repositories(self, last: str | None, limit: int) -> list[str]:
        rows = self._db.execute(
            "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
            (last or "", limit),
        )
        return [r[0] for r in rows]

    # -- blobs -------------------------------------------------------------------------------------
    async def blob_size(self, digest: str) -> int | None:
        row = self._db.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else int(row[0])

    async def list_blobs(self, last: str | None, limit: int) -> list[tuple[str, int]]:
        rows = self._db.execute(
            "SELECT digest, size FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?",
            (last or "", limit),
        )
        return [(r[0], int(r[1])) for r in rows]

    async def linked_blob_size(
        self, repository: str, digest: str, *, keep_for: float | None = None
    ) -> int | None:
        row = self._db.execute(_LINKED_BLOB_SIZE, (repository, digest)).fetchone()
        if row is None:
            return None
        now = time.time()
        if keep_for is None or row[2] is None or row[2] >= now:
            return int(row[0])

        def txn(db: sqlite3.Connection) -> int | None:
            # Under review: kept for another grace delay, unless it was collected already.
            db.execute(
                "UPDATE gc_link_reviews SET since = ? WHERE repository_id = ? AND digest = ?",
                (now + keep_for, row[1], digest),
            )
            found = db.execute(_LINKED_BLOB_SIZE, (repository, digest)).fetchone()
            return None if found is None else int(found[0])

        return await self._transaction(txn, durable=False)

    async def link_blob(self, repository: str, digest: str, size: int) -> None:
        await self._transaction(lambda db: self._link(db, repository, digest, size))

    def _link(self, db: sqlite3.Connection, repository: str, digest: str, size: int) -> None:
        now = time.time()
        repo_id = self._repository_id(db, repository, create=True)
        db.execute(
            "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (digest) DO NOTHING",
            (digest, size, now),
        )
        db.execute(
            "INSERT INTO repository_blobs (repository_id, digest, created_at)"
            " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (repo_id, digest, now),
        )
        db.execute(REVIEW_LINK, (repo_id, digest, now))

    async def link_existing_blob(self, repository: str, digest: str) -> int | None:
        if await self.blob_size(digest) is None:
            return None  # the common miss needs no write lock

        def txn(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchone()
            if row is None:  # collected since
                return None
            self._link(db, repository, digest, int(row[0]))
            return int(row[0])

        return await self._transaction(txn)

    async def mount_blob(self, source: str, repository: str, digest: str) -> int | None:
        if await self.linked_blob_size(source, digest) is None:
            return None  # the common miss needs no write lock

        def txn(db: sqlite3.Connection) -> int | None:
            # Again in the transaction: the link may have been removed since.
            row = db.execute(_LINKED_BLOB_SIZE, (source, digest)).fetchone()
            if row is None:
                return None
            self._link(db, repository, digest, int(row[0]))
            return int(row[0])

        return await self._transaction(txn)

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        def txn(db: sqlite3.Connection) -> bool:
            repo_id = self._repository_id(db, repository)
            cursor = db.execute(
                "DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?",
                (repo_id, digest),
            )
            if cursor.rowcount == 0:
                return False
            db.execute(
                "DELETE FROM gc_link_reviews WHERE repository_id = ? AND digest = ?",
                (repo_id, digest),
            )
            db.execute(REVIEW_BLOB, (digest, time.time()))
            assert repo_id is not None  # a link was deleted
            self._uncharge_link(db, repo_id, digest)
            return True

        return await self._transaction(txn)

    # -- manifests and tags ------------------------------------------------------------------------
    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        row = self._db.execute(
            f"SELECT {_MANIFEST_COLUMNS} FROM repositories r"
            " JOIN manifests m ON m.repository_id = r.id"
            " WHERE r.name = ? AND m.digest = ?",
            (repository, digest),
        ).fetchone()
        return None if row is None else _manifest(row)

    async def get_tagged_manifest(self, repository: str, tag: str) -> ManifestRecord | None:
        row = self._db.execute(
            f"SELECT {_MANIFEST_COLUMNS} FROM repositories r"
            " JOIN tags t ON t.repository_id = r.id"
            " JOIN manifests m ON m.repository_id = r.id AND m.digest = t.digest"
            " WHERE r.name = ? AND t.name = ?",
            (repository, tag),
        ).fetchone()
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
        now = time.time()
        fixed = sorted(set(tags) & set(fixed_tags))

        def txn(db: sqlite3.Connection) -> None:
            repo_id = self._repository_id(db, repository, create=True)
            missing_blobs = _missing(db, "repository_blobs", repo_id, manifest.blob_references)
            missing_manifests = _missing(db, "manifests", repo_id, manifest.manifest_references)
            if missing_blobs or missing_manifests:
                raise MissingReferences(missing_blobs, missing_manifests)
            # Writers are serialised (BEGIN IMMEDIATE): no other put can move a tag between
            # this check and the writes below.
            for tag in fixed:
                row = db.execute(
                    "SELECT digest FROM tags WHERE repository_id = ? AND name = ?", (repo_id, tag)
                ).fetchone()
                if row is not None and row[0] != manifest.digest:
                    raise TagFixed(tag)
            self._enforce_quotas(db, repo_id, manifest, tags, quota_checks)
            db.execute(
                "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject,"
                " annotations, content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (repository_id, digest) DO UPDATE SET"
                " media_type = excluded.media_type, artifact_type = excluded.artifact_type,"
                " subject = excluded.subject, annotations = excluded.annotations,"
                " created_at = excluded.created_at",
                (
                    repo_id,
                    manifest.digest,
                    manifest.media_type,
                    manifest.artifact_type,
                    manifest.subject,
                    json.dumps(manifest.annotations) if manifest.annotations else None,
                    manifest.content,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO manifest_references (repository_id, manifest_digest, digest, kind)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(repo_id, manifest.digest, d, "blob") for d in manifest.blob_references]
                + [(repo_id, manifest.digest, d, "manifest") for d in manifest.manifest_references],
            )
            db.executemany(
                "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (repository_id, name) DO UPDATE SET"
                " digest = excluded.digest, updated_at = excluded.updated_at",
                [(repo_id, tag, manifest.digest, now) for tag in tags],
            )

        await self._transaction(txn)

    async def delete_manifest(
        self,
        repository: str,
        digest: str,
        *,
        protected: Callable[[Sequence[str]], Sequence[str]] | None = None,
    ) -> bool:
        def txn(db: sqlite3.Connection) -> bool:
            repo_id = self._repository_id(db, repository)
            if repo_id is None:
                return False
            if protected is not None:
                tags = db.execute(
                    "SELECT name FROM tags WHERE repository_id = ? AND digest = ? ORDER BY name",
                    (repo_id, digest),
                )
                kept = protected([row[0] for row in tags])
                if kept:
                    raise TagFixed(kept[0])
            return self._delete_manifest(db, repo_id, digest)

        return await self._transaction(txn)

    @staticmethod
    def _delete_manifest(db: sqlite3.Connection, repo_id: int, digest: str) -> bool:
        """Delete a manifest with its tags, in the caller's transaction. Every way of deleting
        a manifest (the API, retention policies) goes through here."""
        # What it referenced may now be unreferenced: reviewed after the grace delay.
        db.execute(
            "INSERT INTO gc_link_reviews (repository_id, digest, since)"
            " SELECT repository_id, digest, ? FROM manifest_references"
            " WHERE repository_id = ? AND manifest_digest = ? AND kind = 'blob'"
            " ON CONFLICT (repository_id, digest) DO UPDATE SET since = excluded.since",
            (time.time(), repo_id, digest),
        )
        # Tags and the manifest's references go with it (ON DELETE CASCADE).
        cursor = db.execute(
            "DELETE FROM manifests WHERE repository_id = ? AND digest = ?", (repo_id, digest)
        )
        return cursor.rowcount > 0

    async def manifest_tags(self, repository: str, digest: str) -> list[str]:
        rows = self._db.execute(
            "SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id"
            " WHERE r.name = ? AND t.digest = ? ORDER BY t.name",
            (repository, digest),
        )
        return [r[0] for r in rows]

    async def delete_tag(self, repository: str, tag: str) -> bool:
        return await self._transaction(lambda db: self._delete_tag(db, repository, tag))

    @staticmethod
    def _delete_tag(
        db: sqlite3.Connection,
        repository: str,
        tag: str,
        digest: str | None = None,
        pushed_at: float | None = None,
    ) -> bool:
        """Delete a tag (only if it points at `digest` and was last pushed at `pushed_at`,
        when given) in the caller's transaction. Every way of deleting a tag goes through
        here."""
        cursor = db.execute(
            "DELETE FROM tags WHERE name = ? AND repository_id ="
            " (SELECT id FROM repositories WHERE name = ?) AND digest = coalesce(?, digest)"
            " AND updated_at = coalesce(?, updated_at)",
            (tag, repository, digest, pushed_at),
        )
        return cursor.rowcount > 0

    async def list_tags(self, repository: str, last: str | None, limit: int) -> list[str]:
        rows = self._db.execute(
            "SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id"
            " WHERE r.name = ? AND t.name > ? ORDER BY t.name LIMIT ?",
            (repository, last or "", limit),
        )
        return [r[0] for r in rows]

    async def list_referrers(
        self,
        repository: str,
        subject: str,
        artifact_type: str | None,
        last: str | None,
        limit: int,
    ) -> list[Referrer]:
        sql = (
            "SELECT m.digest, m.media_type, length(m.content), m.artifact_type, m.annotations"
            " FROM repositories r JOIN manifests m ON m.repository_id = r.id"
            " WHERE r.name = ? AND m.subject = ? AND m.digest > ?"
        )
        params: list[object] = [repository, subject, last or ""]
        if artifact_type is not None:
            sql += " AND m.artifact_type = ?"
            params.append(artifact_type)
        sql += " ORDER BY m.digest LIMIT ?"
        params.append(limit)
        return [
            Referrer(
                digest=row[0],
                media_type=row[1],
                size=int(row[2]),
                artifact_type=row[3],
                annotations=json.loads(row[4]) if row[4] else None,
            )
            for row in self._db.execute(sql, params)
        ]

    # -- uploads -----------------------------------------------------------------------------------
    async def create_upload(self, upload: UploadRecord) -> None:
        now = time.time()
        upload.created_at = upload.updated_at = now

        def txn(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO uploads (id, repository, algorithm, size, hash_state, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.id,
                    upload.repository,
                    upload.algorithm,
                    upload.size,
                    upload.hash_state,
                    now,
                    now,
                ),
            )

        await self._transaction(txn, durable=False)

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = self._db.execute(
            "SELECT id, repository, algorithm, size, hash_state, created_at, updated_at"
            " FROM uploads WHERE id = ?",
            (upload_id,),
        ).fetchone()
        return None if row is None else UploadRecord(*row)

    async def update_upload(
        self, upload_id: str, expected_size: int, size: int, hash_state: bytes | None
    ) -> bool:
        def txn(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE uploads SET size = ?, hash_state = ?, updated_at = ?"
                " WHERE id = ? AND size = ?",
                (size, hash_state, time.time(), upload_id, expected_size),
            )
            return cursor.rowcount > 0

        return await self._transaction(txn, durable=False)

    @asynccontextmanager
    async def lock_upload(self, upload_id: str) -> AsyncIterator[None]:
        # An flock on a file per upload: SQLite serves one machine, and the kernel drops the
        # lock when the holding process dies.
        self._locks.mkdir(exist_ok=True)
        fd = os.open(self._locks / upload_id, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadLocked(upload_id) from None
            yield
        finally:
            os.close(fd)

    async def delete_upload(self, upload_id: str) -> bool:
        def txn(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)).rowcount > 0

        deleted = await self._transaction(txn, durable=False)
        self._remove_lock_file(upload_id)
        return deleted

    async def complete_upload(self, upload: UploadRecord, digest: str, size: int) -> None:
        def txn(db: sqlite3.Connection) -> None:
            self._link(db, upload.repository, digest, size)
            # The bytes were just put in place (under lock_blob): a collection decided
            # before must not delete them.
            db.execute("DELETE FROM gc_tombstones WHERE digest = ?", (digest,))
            db.execute("DELETE FROM uploads WHERE id = ?", (upload.id,))

        await self._transaction(txn)
        self._remove_lock_file(upload.id)

    def _remove_lock_file(self, upload_id: str) -> None:
        # A request that still opens this lock file finds the session gone once it holds it.
        with suppress(FileNotFoundError):
            os.unlink(self._locks / upload_id)

    async def list_uploads_older_than(self, timestamp: float) -> list[UploadRecord]:
        rows = self._db.execute(
            "SELECT id, repository, algorithm, size, hash_state, created_at, updated_at"
            " FROM uploads WHERE updated_at < ? ORDER BY updated_at",
            (timestamp,),
        )
        return [UploadRecord(*row) for row in rows]

    # -- API tokens ------------------------------------------------------------------------------
    async def create_api_token(self, token: ApiTokenRecord) -> None:
        created = token.created_at or time.time()
        scopes = json.dumps([[pattern, list(actions)] for pattern, actions in token.scopes])

        def txn(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at, revoked_at,"
                " kind) VALUES (?, ?, ?, ?, ?, NULL, ?)",
                (token.id, token.name, token.secret_hash, scopes, created, token.kind),
            )

        await self._transaction(txn)

    async def get_api_token(self, token_id: str) -> ApiTokenRecord | None:
        row = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)
        ).fetchone()
        return None if row is None else _api_token(row)

    async def list_api_tokens(self) -> list[ApiTokenRecord]:
        rows = self._db.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at")
        return [_api_token(row) for row in rows]

    async def revoke_api_token(self, token_id: str) -> bool:
        def txn(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (time.time(), token_id),
                ).rowcount
                > 0
            )

        return await self._transaction(txn)


_TOKEN_COLUMNS = "id, name, secret_hash, scopes, created_at, revoked_at, kind"


def _api_token(row: tuple[object, ...]) -> ApiTokenRecord:
    token_id, name, secret_hash, scopes, created_at, revoked_at, kind = row
    return ApiTokenRecord(
        id=str(token_id),
        name=str(name),
        secret_hash=bytes(secret_hash),  # type: ignore[call-overload]
        scopes=tuple((str(p), tuple(a)) for p, a in json.loads(str(scopes))),
        created_at=float(created_at),  # type: ignore[arg-type]
        revoked_at=None if revoked_at is None else float(revoked_at),  # type: ignore[arg-type]
        kind=str(kind),
    )


def _manifest(row: tuple[object, ...]) -> ManifestRecord:
    digest, media_type, content, artifact_type, subject, annotations = row
    return ManifestRecord(
        digest=str(digest),
        media_type=str(media_type),
        content=bytes(content),  # type: ignore[call-overload]
        artifact_type=None if artifact_type is None else str(artifact_type),
        subject=None if subject is None else str(subject),
        annotations=json.loads(str(annotations)) if annotations else None,
    )


def _missing(
    db: sqlite3.Connection, table: str, repo_id: int | None, digests: Sequence[str]
) -> list[str]:
    wanted = sorted(set(digests))
    if not wanted:
        return []
    if repo_id is None:
        return wanted
    present: set[str] = set()
    # Stay well under SQLite's limit on bound parameters.
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        marks = ",".join("?" * len(batch))
        present.update(
            r[0]
            for r in db.execute(
                f"SELECT digest FROM {table} WHERE repository_id = ? AND digest IN ({marks})",
                (repo_id, *batch),
            )
        )
    return [d for d in wanted if d not in present]
