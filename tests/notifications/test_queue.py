"""The durable queue's tables, on SQLite and PostgreSQL alike: order, exact removal, leases, and
group commit of appends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from cargobay.errors import Unavailable
from cargobay.notifications.postgres_queue import PostgresQueueStore
from cargobay.notifications.queue import EventQueue, QueuedEvent, QueueStore, Row
from cargobay.notifications.sqlite_queue import SQLiteQueueStore

STORES: dict[str, Callable[[pytest.FixtureRequest, Path], QueueStore]] = {
    "sqlite": lambda request, tmp: SQLiteQueueStore(tmp / "metadata.db"),
    "postgres": lambda request, tmp: PostgresQueueStore(
        request.getfixturevalue("postgres").create_database()
    ),
}


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueStore]:
    made = STORES[request.param](request, tmp_path)
    await made.create_tables()
    await made.create_tables()  # idempotent
    yield made
    await made.close()


async def test_events_wait_in_order_per_endpoint(store: QueueStore) -> None:
    await store.insert([("a", "1"), ("b", "1"), ("a", "2")])
    await store.insert([("a", "3")])
    assert [e.event for e in await store.peek("a", 10)] == ["1", "2", "3"]
    assert [e.event for e in await store.peek("a", 2)] == ["1", "2"]
    assert [e.event for e in await store.peek("b", 10)] == ["1"]
    assert await store.peek("c", 10) == []
    assert (await store.count("a"), await store.count("b"), await store.count("c")) == (3, 1, 0)


async def test_remove_takes_exactly_the_delivered_events(store: QueueStore) -> None:
    await store.insert([("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")])
    first, second, third = await store.peek("a", 10)
    await store.remove("a", [first.id, third.id])
    assert await store.peek("a", 10) == [second]
    (b,) = await store.peek("b", 10)
    await store.remove("a", [b.id])  # another endpoint's row stays
    assert await store.peek("b", 10) == [b]


async def test_ids_grow_after_the_queue_was_emptied(store: QueueStore) -> None:
    await store.insert([("a", "1")])
    (first,) = await store.peek("a", 1)
    await store.remove("a", [first.id])
    await store.insert([("a", "2")])
    (second,) = await store.peek("a", 1)
    assert second.id > first.id


async def test_one_owner_holds_a_lease(store: QueueStore) -> None:
    assert await store.claim("a", "worker-1", 30)
    assert await store.claim("a", "worker-1", 30)  # renewal
    assert not await store.claim("a", "worker-2", 30)
    assert await store.claim("b", "worker-2", 30)  # leases are per endpoint
    await store.release("a", "worker-2")  # not the owner: nothing happens
    assert not await store.claim("a", "worker-2", 30)
    await store.release("a", "worker-1")
    assert await store.claim("a", "worker-2", 30)
    assert not await store.claim("a", "worker-1", 30)


async def test_an_expired_lease_is_taken_over(store: QueueStore) -> None:
    assert await store.claim("a", "crashed", 0.2)
    assert not await store.claim("a", "survivor", 30)
    deadline = asyncio.get_running_loop().time() + 10
    while not await store.claim("a", "survivor", 30):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert not await store.claim("a", "crashed", 30)


async def test_rows_survive_reopening(tmp_path: Path) -> None:
    first = SQLiteQueueStore(tmp_path / "metadata.db")
    await first.create_tables()
    await first.insert([("a", "kept")])
    await first.close()
    second = SQLiteQueueStore(tmp_path / "metadata.db")
    assert [e.event for e in await second.peek("a", 10)] == ["kept"]
    await second.close()


class RecordingStore(QueueStore):
    """Counts transactions; each insert takes a moment, as a commit's fsync does."""

    def __init__(self) -> None:
        self.inserts: list[list[Row]] = []
        self.fail = False

    async def create_tables(self) -> None:
        pass

    async def insert(self, rows: Sequence[Row]) -> None:
        await asyncio.sleep(0.05)
        if self.fail:
            raise OSError("disk full")
        self.inserts.append(list(rows))

    async def claim(self, endpoint: str, owner: str, seconds: float) -> bool:
        return True

    async def release(self, endpoint: str, owner: str) -> None:
        pass

    async def peek(self, endpoint: str, limit: int) -> list[QueuedEvent]:
        return []

    async def remove(self, endpoint: str, ids: Sequence[int]) -> None:
        pass

    async def count(self, endpoint: str) -> int:
        return 0

    async def close(self) -> None:
        pass


async def test_concurrent_appends_share_a_commit() -> None:
    recording = RecordingStore()
    queue = EventQueue(recording)
    first = asyncio.create_task(queue.append([("a", "0")]))
    await asyncio.sleep(0.01)  # its commit is under way
    await asyncio.gather(first, *(queue.append([("a", str(i))]) for i in range(1, 20)))
    # The first append commits alone; the 19 that arrived meanwhile commit together.
    assert [len(rows) for rows in recording.inserts] == [1, 19]
    assert [event for rows in recording.inserts for _, event in rows] == [str(i) for i in range(20)]
    await queue.close()


async def test_a_failed_commit_fails_every_request_in_it() -> None:
    recording = RecordingStore()
    recording.fail = True
    queue = EventQueue(recording)
    results = await asyncio.gather(
        *(queue.append([("a", str(i))]) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results), results
    recording.fail = False
    await queue.append([("a", "later")])
    assert recording.inserts == [[("a", "later")]]


async def test_a_cancelled_request_still_gets_its_event_written() -> None:
    recording = RecordingStore()
    queue = EventQueue(recording)
    task = asyncio.create_task(queue.append([("a", "1")]))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await queue.close()
    assert recording.inserts == [[("a", "1")]]


async def test_a_database_failure_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        await SQLiteQueueStore(tmp_path).create_tables()  # a folder, not a database
