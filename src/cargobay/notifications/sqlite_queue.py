"""The event queue in the registry's SQLite database.

Like the metadata store: reads run on the event loop (indexed lookups take microseconds), writes
on a thread of their own, queued behind the same `flock` as the metadata store's writers (see
cargobay.metadata.sqlite), so that the two never meet in SQLite's polling busy handler.
Checkpoints run on another thread, at most once a second.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

from cargobay.errors import Unavailable
from cargobay.metadata.sqlite import write_transaction
from cargobay.notifications.queue import QueuedEvent, QueueStore, Row

T = TypeVar("T")

CHECKPOINT_INTERVAL = 1.0

TABLES = (
    """CREATE TABLE IF NOT EXISTS notification_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        event TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS notification_queue_endpoint ON notification_queue (endpoint, id)",
    """CREATE TABLE IF NOT EXISTS notification_leases (
        endpoint TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
)

_CLAIM = """
    INSERT INTO notification_leases (endpoint, owner, expires_at) VALUES (?, ?, ?)
    ON CONFLICT (endpoint) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE owner = excluded.owner OR expires_at < ?"""


class SQLiteQueueStore(QueueStore):
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        # The metadata store's writer lock (cargobay.metadata.sqlite).
        self._write_lock_path = path.parent / (path.name + ".write-lock")
        self._reader: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="notifications-writer")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="notifications-checkpoint")
        self._writer_conn: sqlite3.Connection | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._write_lock = -1
        self._last_checkpoint = 0.0

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    @property
    def _db(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self._db)
        except sqlite3.Error as exc:
            raise Unavailable(f"notification queue: {exc}") from None

    async def _transaction(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """A write transaction on the writer thread. `durable=False` (delivery bookkeeping)
        commits without fsync: losing it to a power cut costs a duplicate delivery, never an
        event."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, self._run, work, durable)
        except (sqlite3.Error, OSError) as exc:
            raise Unavailable(f"notification queue: {exc}") from None

    def _run(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        if self._writer_conn is None:
            self._writer_conn = self._connect()
            self._write_lock = os.open(self._write_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        db = self._writer_conn
        result = write_transaction(db, self._write_lock, self.synchronous, durable, work)
        now = time.monotonic()
        if now - self._last_checkpoint > CHECKPOINT_INTERVAL:
            self._last_checkpoint = now
            self._checkpointer.submit(self._checkpoint)
        return result

    def _checkpoint(self) -> None:
        if self._checkpoint_conn is None:
            self._checkpoint_conn = self._connect()
        with suppress(sqlite3.OperationalError):  # busy: another process checkpoints
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def create_tables(self) -> None:
        def create(db: sqlite3.Connection) -> None:
            for statement in TABLES:
                db.execute(statement)

        await self._transaction(create)

    async def insert(self, rows: Sequence[Row]) -> None:
        now = time.time()
        await self._transaction(
            lambda db: db.executemany(
                "INSERT INTO notification_queue (endpoint, event, created_at) VALUES (?, ?, ?)",
                [(endpoint, event, now) for endpoint, event in rows],
            )
        )

    async def claim(self, endpoint: str, owner: str, seconds: float) -> bool:
        now = time.time()
        held = self._read(
            lambda db: db.execute(
                "SELECT owner, expires_at FROM notification_leases WHERE endpoint = ?",
                (endpoint,),
            ).fetchone()
        )
        if held is not None and held[0] != owner and held[1] >= now:
            return False  # decided by a read: no write transaction for the processes waiting
        changed = await self._transaction(
            lambda db: db.execute(_CLAIM, (endpoint, owner, now + seconds, now)).rowcount,
            durable=False,
        )
        return bool(changed)

    async def release(self, endpoint: str, owner: str) -> None:
        await self._transaction(
            lambda db: db.execute(
                "UPDATE notification_leases SET expires_at = 0 WHERE endpoint = ? AND owner = ?",
                (endpoint, owner),
            ),
            durable=False,
        )

    async def peek(self, endpoint: str, limit: int) -> list[QueuedEvent]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT id, event FROM notification_queue WHERE endpoint = ? ORDER BY id LIMIT ?",
                (endpoint, limit),
            ).fetchall()
        )
        return [QueuedEvent(int(i), str(e)) for i, e in rows]

    async def remove(self, endpoint: str, ids: Sequence[int]) -> None:
        await self._transaction(
            lambda db: db.executemany(
                "DELETE FROM notification_queue WHERE endpoint = ? AND id = ?",
                [(endpoint, i) for i in ids],
            ),
            durable=False,
        )

    async def count(self, endpoint: str) -> int:
        row = self._read(
            lambda db: db.execute(
                "SELECT count(*) FROM notification_queue WHERE endpoint = ?", (endpoint,)
            ).fetchone()
        )
        return int(row[0])

    async def close(self) -> None:
        conn = self._writer_conn
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, conn.close)
        self._writer.shutdown()
        self._checkpointer.shutdown()
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()
        if self._write_lock >= 0:
            os.close(self._write_lock)
        if self._reader is not None:
            self._reader.close()
        self._writer_conn = self._checkpoint_conn = self._reader = None
        self._write_lock = -1
