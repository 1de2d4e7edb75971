"""The event queue in the registry's PostgreSQL database, shared by every instance.

Each worker process has a small pool of its own (created lazily, inside its event loop). Lease
times come from the database's clock, so instances with skewed clocks agree on expiry.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from cargobay.errors import Unavailable
from cargobay.metadata.postgres import CONNECT_ARGS, UNAVAILABLE_ERRORS
from cargobay.notifications.queue import QueuedEvent, QueueStore, Row

POOL_SIZE = 2
ACQUIRE_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0
# Serializes concurrent CREATE TABLE IF NOT EXISTS (which can fail on a race otherwise).
DDL_LOCK = 0x6361_7267_6F6E_6F74  # "cargonot"

TABLES = (
    """CREATE TABLE IF NOT EXISTS notification_queue (
        id bigserial PRIMARY KEY,
        endpoint text COLLATE "C" NOT NULL,
        event text NOT NULL,
        created_at double precision NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS notification_queue_endpoint ON notification_queue (endpoint, id)",
    """CREATE TABLE IF NOT EXISTS notification_leases (
        endpoint text COLLATE "C" PRIMARY KEY,
        owner text NOT NULL,
        expires_at double precision NOT NULL
    )""",
)

_NOW = "extract(epoch FROM clock_timestamp())"
_CLAIM = f"""
    INSERT INTO notification_leases AS l (endpoint, owner, expires_at)
    VALUES ($1, $2, {_NOW} + $3::double precision)
    ON CONFLICT (endpoint) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE l.owner = excluded.owner OR l.expires_at < {_NOW}
    RETURNING owner"""


class PostgresQueueStore(QueueStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=0,
                    max_size=POOL_SIZE,
                    command_timeout=COMMAND_TIMEOUT,
                    **CONNECT_ARGS,
                )
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn
        except Exception as exc:
            failure = exc.__context__ if isinstance(exc, asyncpg.InterfaceError) else exc
            if isinstance(failure, UNAVAILABLE_ERRORS):
                raise Unavailable(
                    f"the notification queue's database is unavailable ({type(failure).__name__})"
                ) from exc
            raise

    async def create_tables(self) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK)
            for statement in TABLES:
                await conn.execute(statement)

    async def insert(self, rows: Sequence[Row]) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO notification_queue (endpoint, event, created_at)"
                " SELECT r.endpoint, r.event, $3"
                " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r (endpoint, event, n)"
                " ORDER BY r.n",
                [endpoint for endpoint, _ in rows],
                [event for _, event in rows],
                time.time(),
            )

    async def claim(self, endpoint: str, owner: str, seconds: float) -> bool:
        async with self._connection() as conn:
            free = await conn.fetchval(
                f"SELECT owner = $2 OR expires_at < {_NOW} FROM notification_leases"
                " WHERE endpoint = $1",
                endpoint,
                owner,
            )
            if free is False:
                return False  # decided by a read: the waiting processes lock no row
            return await conn.fetchval(_CLAIM, endpoint, owner, seconds) is not None

    async def release(self, endpoint: str, owner: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE notification_leases SET expires_at = 0 WHERE endpoint = $1 AND owner = $2",
                endpoint,
                owner,
            )

    async def peek(self, endpoint: str, limit: int) -> list[QueuedEvent]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, event FROM notification_queue WHERE endpoint = $1 ORDER BY id LIMIT $2",
                endpoint,
                limit,
            )
        return [QueuedEvent(int(r[0]), str(r[1])) for r in rows]

    async def remove(self, endpoint: str, ids: Sequence[int]) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM notification_queue WHERE endpoint = $1 AND id = ANY($2::bigint[])",
                endpoint,
                list(ids),
            )

    async def count(self, endpoint: str) -> int:
        async with self._connection() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM notification_queue WHERE endpoint = $1", endpoint
            )
        return int(value)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
