"""The durable event queue: one row per (event, endpoint) in the metadata database, removed
once that endpoint answered 2xx; and per endpoint a lease naming the one process (of all
workers and instances) that delivers its events, so that they go out in order and once.

Appends from concurrent requests are committed together (group commit): a request waits for
one transaction, but many requests share its fsync.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

# One queue row: the endpoint's key and the event, encoded.
Row = tuple[str, str]


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    id: int
    event: str  # the encoded event


class QueueStore(ABC):
    """The tables behind the queue (SQLite or PostgreSQL). Every method may raise
    cargobay.errors.Unavailable when the database cannot be reached."""

    @abstractmethod
    async def create_tables(self) -> None:
        """Idempotent DDL; safe when several processes run it at once."""

    @abstractmethod
    async def insert(self, rows: Sequence[Row]) -> None:
        """Insert the rows, in order, in one durable transaction."""

    @abstractmethod
    async def claim(self, endpoint: str, owner: str, seconds: float) -> bool:
        """Take or renew the endpoint's lease for `seconds`, unless another owner holds an
        unexpired one."""

    @abstractmethod
    async def release(self, endpoint: str, owner: str) -> None:
        """Let the lease go now (if `owner` holds it), so another process takes over at once."""

    @abstractmethod
    async def peek(self, endpoint: str, limit: int) -> list[QueuedEvent]:
        """The endpoint's oldest events, in the order they were recorded."""

    @abstractmethod
    async def remove(self, endpoint: str, ids: Sequence[int]) -> None:
        """Forget delivered events."""

    @abstractmethod
    async def count(self, endpoint: str) -> int:
        """How many of the endpoint's events wait."""

    @abstractmethod
    async def close(self) -> None: ...


class EventQueue:
    """A QueueStore with lazy table creation and group commit of appends."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self._ready = False
        self._setup_lock = asyncio.Lock()
        self._waiting: list[tuple[Sequence[Row], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def ready(self) -> QueueStore:
        """The store, its tables created (once per process)."""
        if not self._ready:
            async with self._setup_lock:
                if not self._ready:
                    await self.store.create_tables()
                    self._ready = True
        return self.store

    async def append(self, rows: Sequence[Row]) -> None:
        """Record rows durably; returns once they are committed."""
        if not rows:
            return
        await self.ready()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            # The request was cancelled (client gone): its rows are still written.
            done.add_done_callback(_consume)
            raise

    async def _write(self) -> None:
        """Commit whatever waits, in one transaction; what arrives meanwhile goes next."""
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self.store.insert([row for rows, _ in batch for row in rows])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.store.close()


def _consume(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: no "exception was never retrieved" warning
