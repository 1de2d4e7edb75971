"""The PostgreSQL store against a real server: what the shared contract suite cannot show, i.e.
several instances on one database, and outages."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from cargobay.errors import Unavailable
from cargobay.metadata import postgres as module
from cargobay.metadata.base import ManifestRecord, MissingReferences, UploadLocked
from cargobay.metadata.postgres import PostgresMetadataStore
from cargobay.metadata.postgres_schema import MIGRATIONS
from tests.services.postgres import PostgresServer


def d(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(name: str, **fields: object) -> ManifestRecord:
    return ManifestRecord(
        digest=d(name),
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=f'{{"name": "{name}"}}'.encode(),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    return postgres.create_database()


@pytest.fixture
async def stores(dsn: str) -> AsyncIterator[tuple[PostgresMetadataStore, PostgresMetadataStore]]:
    """Two stores on one database: two registry instances."""
    a, b = PostgresMetadataStore(dsn), PostgresMetadataStore(dsn)
    a.migrate()
    yield a, b
    await a.close()
    await b.close()


async def test_upload_lock_is_exclusive_across_instances(
    stores: tuple[PostgresMetadataStore, PostgresMetadataStore],
) -> None:
    a, b = stores
    async with a.lock_upload("u1"):
        with pytest.raises(UploadLocked):
            async with b.lock_upload("u1"):
                pass
        async with b.lock_upload("u2"):
            with pytest.raises(UploadLocked):
                async with a.lock_upload("u2"):
                    pass
    async with b.lock_upload("u1"):
        pass


async def test_upload_lock_is_released_when_its_connection_dies(
    stores: tuple[PostgresMetadataStore, PostgresMetadataStore], dsn: str
) -> None:
    a, b = stores
    async with a.lock_upload("u1"):
        conn = await asyncpg.connect(dsn)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        assert killed == 1
        async with b.lock_upload("u1"):
            pass
    # The holder's exit did not fail, and its store reconnects for the next lock.
    async with a.lock_upload("u1"):
        with pytest.raises(UploadLocked):
            async with b.lock_upload("u1"):
                pass


async def test_cancelled_holder_releases_the_lock(
    stores: tuple[PostgresMetadataStore, PostgresMetadataStore],
) -> None:
    a, b = stores
    held = asyncio.Event()

    async def hold() -> None:
        async with a.lock_upload("u1"):
            held.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hold())
    await held.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with b.lock_upload("u1"):
        pass


async def test_concurrent_tag_moves_end_consistent(
    stores: tuple[PostgresMetadataStore, PostgresMetadataStore],
) -> None:
    a, b = stores
    records = [manifest(f"m{i}") for i in range(40)]
    await asyncio.gather(
        *(
            (a if i % 2 else b).put_manifest("r", record, ["latest", f"v{i}", "stable"])
            for i, record in enumerate(records)
        )
    )
    seen_a = await a.get_tagged_manifest("r", "latest")
    seen_b = await b.get_tagged_manifest("r", "latest")
    assert seen_a is not None and seen_b is not None
    assert seen_a.digest == seen_b.digest
    assert seen_a.digest in {r.digest for r in records}
    stable = await b.get_tagged_manifest("r", "stable")
    assert stable is not None and stable.digest in {r.digest for r in records}
    assert len(await a.list_tags("r", None, 100)) == 2 + len(records)


async def test_delete_racing_put_leaves_no_dangling_reference(
    stores: tuple[PostgresMetadataStore, PostgresMetadataStore], dsn: str
) -> None:
    a, b = stores
    child = manifest("child")
    await a.link_blob("r", d("layer"), 3)
    await a.put_manifest("r", child, [])
    # Another instance has deleted the child and the blob link but not committed yet: the put
    # must wait for that transaction and then refuse, not store an index pointing at nothing.
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM manifests WHERE digest = $1", child.digest)
            await conn.execute("DELETE FROM repository_blobs WHERE digest = $1", d("layer"))
            index = manifest(
                "index", manifest_references=(child.digest,), blob_references=(d("layer"),)
            )
            put = asyncio.create_task(b.put_manifest("r", index, ["multi"]))
            await asyncio.sleep(0.3)
            assert not put.done()
    finally:
        await conn.close()
    with pytest.raises(MissingReferences) as caught:
        await put
    assert list(caught.value.manifests) == [child.digest]
    assert list(caught.value.blobs) == [d("layer")]
    assert await a.get_manifest("r", index.digest) is None
    assert await a.get_tagged_manifest("r", "multi") is None

    # Free-running races end in one of the two serial outcomes, with no tag left dangling.
    for i in range(20):
        child = manifest(f"child{i}")
        await a.put_manifest("r", child, [f"c{i}"])
        index = manifest(f"index{i}", manifest_references=(child.digest,))
        put, deleted = await asyncio.gather(
            a.put_manifest("r", index, [f"i{i}"]),
            b.delete_manifest("r", child.digest),
            return_exceptions=True,
        )
        assert deleted is True
        stored = await b.get_manifest("r", index.digest)
        assert (put is None) == (stored is not None)
        assert put is None or isinstance(put, MissingReferences)
        assert await b.get_tagged_manifest("r", f"c{i}") is None
    conn = await asyncpg.connect(dsn)
    try:
        dangling = await conn.fetchval(
            "SELECT count(*) FROM tags t LEFT JOIN manifests m"
            " ON m.repository_id = t.repository_id AND m.digest = t.digest WHERE m.digest IS NULL"
        )
    finally:
        await conn.close()
    assert dangling == 0


def test_concurrent_migrations_apply_once(postgres: PostgresServer) -> None:
    dsn = postgres.create_database()
    stores = [PostgresMetadataStore(dsn) for _ in range(4)]
    with ThreadPoolExecutor(len(stores)) as pool:
        for future in [pool.submit(store.migrate) for store in stores]:
            future.result()
    stores[0].migrate()
    versions = postgres.psql(
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
        dsn.rsplit("/", 1)[1],
    )
    assert versions.strip() == ",".join(str(v) for v in range(1, len(MIGRATIONS) + 1))


async def test_too_many_connections_is_unavailable(postgres: PostgresServer) -> None:
    dsn = postgres.create_database()
    database = dsn.rsplit("/", 1)[1]
    role = f"limited_{database}"
    postgres.psql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    PostgresMetadataStore(dsn).migrate()
    postgres.psql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}", database)
    store = PostgresMetadataStore(dsn.replace("postgres@", f"{role}@"))
    try:
        async with store.lock_upload("u1"):  # the lock connection is the role's only one
            with pytest.raises(Unavailable) as caught:
                await store.list_tags("r", None, 10)
            assert "TooManyConnectionsError" in caught.value.message
        await store.close()
        assert await store.list_tags("r", None, 10) == []
    finally:
        await store.close()


async def test_busy_pool_and_lost_connection_are_unavailable(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresMetadataStore(dsn, pool_size=1)
    store.migrate()
    monkeypatch.setattr(module, "ACQUIRE_TIMEOUT", 0.2)
    try:
        async with store._connection():
            with pytest.raises(Unavailable):  # the only connection is in use
                await store.blob_size(d("x"))
        with pytest.raises(Unavailable):  # a connection lost in the middle of a statement
            async with store._connection() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                query = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))
                await asyncio.sleep(0.2)
                other = await asyncpg.connect(dsn)
                try:
                    await other.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
                finally:
                    await other.close()
                async with asyncio.timeout(5):
                    await query
        assert await store.blob_size(d("x")) is None  # a new connection replaced it
    finally:
        await store.close()


async def test_outage_raises_unavailable_quickly_and_recovers() -> None:
    server = PostgresServer().start()
    try:
        store = PostgresMetadataStore(server.create_database("outage"))
        store.migrate()
        await store.put_manifest("r", manifest("m"), ["t"])
        server.stop()
        calls = [
            lambda: store.get_tagged_manifest("r", "t"),
            lambda: store.put_manifest("r", manifest("n"), ["t"]),
            lambda: store.list_tags("r", None, 10),
            lambda: store.update_upload("u", 0, 1, None),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await call()
            assert time.monotonic() - started < 5
        with pytest.raises(Unavailable):
            async with store.lock_upload("u"):
                pass
        with pytest.raises(Unavailable):
            store.migrate()

        server.start()
        got = await store.get_tagged_manifest("r", "t")
        assert got is not None and got.digest == manifest("m").digest
        await store.put_manifest("r", manifest("n"), ["t"])
        async with store.lock_upload("u"):
            pass
        await store.close()
    finally:
        server.cleanup()


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        store = PostgresMetadataStore(f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/db")
        with pytest.raises(Unavailable):
            await store.repository_exists("r")
        with pytest.raises(Unavailable):
            store.migrate()
        await store.close()
