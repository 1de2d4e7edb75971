"""The quota part of the metadata store contract, run against every store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial

import asyncpg
import pytest

from cargobay.auth.policy import repository_matches
from cargobay.metadata.base import (
    MetadataStore,
    QuotaCheck,
    QuotaExceeded,
    QuotaNotSetUp,
    QuotaUsage,
)
from cargobay.metadata.postgres import PostgresMetadataStore
from tests.metadata.test_contract import d, manifest
from tests.metadata.test_gc_contract import collect_all
from tests.services.postgres import PostgresServer

TEAM = "team/*"


def covers(*keys: str) -> dict[str, Callable[[str], bool]]:
    """Quota keys as lifecycle.quota makes them: the globs, joined with ", "."""
    return {key: partial(matches, patterns=key.split(", ")) for key in keys}


def matches(name: str, patterns: list[str]) -> bool:
    return repository_matches(name, patterns)


async def usage(meta: MetadataStore, key: str = TEAM) -> tuple[int, int, int]:
    (found,) = await meta.quota_usage([key])
    return found.bytes, found.tags, found.repositories


async def image(
    meta: MetadataStore,
    repository: str,
    name: str,
    blobs: dict[str, int],
    tags: list[str],
    *checks: QuotaCheck,
) -> None:
    """Link the blobs (as uploads do), then push a manifest referencing them."""
    for blob, size in blobs.items():
        await meta.link_blob(repository, d(blob), size)
    record = manifest(name, blob_references=tuple(d(b) for b in blobs))
    await meta.put_manifest(repository, record, tags, quota_checks=checks)


async def test_a_new_quota_starts_empty_and_unknown_keys_have_no_usage(
    meta: MetadataStore,
) -> None:
    assert await meta.set_up_quotas(covers(TEAM)) == [TEAM]
    assert await meta.set_up_quotas(covers(TEAM)) == []  # already set up
    assert await meta.quota_usage([TEAM, "other/*"]) == [QuotaUsage(TEAM, 0, 0, 0)]


async def test_pushes_charge_referenced_blobs_once_per_quota(meta: MetadataStore) -> None:
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_bytes=1000, max_tags=10)
    await image(meta, "team/a", "m1", {"shared": 100, "a": 10}, ["v1"], check)
    assert await usage(meta) == (110, 1, 1)
    # The shared blob again, in another repository of the quota: counted once.
    await image(meta, "team/b", "m2", {"shared": 100, "b": 20}, ["v1", "v2"], check)
    assert await usage(meta) == (130, 3, 2)
    # Uploaded but referenced by no manifest: not charged.
    await meta.link_blob("team/a", d("loose"), 500)
    assert await usage(meta) == (130, 3, 2)
    # A push adding nothing new (the same image, the same tag) changes nothing.
    await image(meta, "team/b", "m2", {"shared": 100, "b": 20}, ["v1"], check)
    assert await usage(meta) == (130, 3, 2)


async def test_unlinking_the_last_link_in_the_quota_uncharges(meta: MetadataStore) -> None:
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM)
    await image(meta, "team/a", "m1", {"shared": 100, "a": 10}, ["v1"], check)
    await image(meta, "team/b", "m2", {"shared": 100}, [], check)
    await meta.link_blob("elsewhere", d("shared"), 100)  # outside the quota: irrelevant
    assert await meta.unlink_blob("team/a", d("shared"))
    assert await usage(meta) == (110, 1, 2)  # team/b still links it
    assert await meta.unlink_blob("team/b", d("shared"))
    assert await usage(meta) == (10, 1, 2)
    assert await meta.unlink_blob("team/a", d("a"))
    assert await usage(meta) == (0, 1, 2)


async def test_garbage_collection_frees_what_deleted_manifests_held(
    meta: MetadataStore,
) -> None:
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_bytes=150)
    await image(meta, "team/a", "m1", {"a1": 50, "a2": 50}, ["v1"], check)
    assert await meta.delete_manifest("team/a", d("m1"))
    assert await usage(meta) == (100, 0, 1)  # the links stay until collected
    with pytest.raises(QuotaExceeded):
        await image(meta, "team/a", "m2", {"b1": 100}, ["v2"], check)
    await collect_all(meta)
    assert await usage(meta) == (0, 0, 1)
    await image(meta, "team/a", "m2", {"b1": 100}, ["v2"], check)
    assert await usage(meta) == (100, 1, 1)


async def test_a_push_over_the_byte_limit_stores_nothing(meta: MetadataStore) -> None:
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_bytes=100)
    await image(meta, "team/a", "m1", {"a": 60}, ["v1"], check)
    with pytest.raises(QuotaExceeded) as refused:
        await image(meta, "team/a", "m2", {"a": 60, "b": 41}, ["v2"], check)
    assert (refused.value.key, refused.value.what) == (TEAM, "storage")
    assert (refused.value.used, refused.value.limit) == (101, 100)
    assert await meta.get_manifest("team/a", d("m2")) is None
    assert await meta.list_tags("team/a", None, 10) == ["v1"]
    assert await usage(meta) == (60, 1, 1)
    await image(meta, "team/a", "m3", {"a": 60, "c": 40}, ["v3"], check)  # exactly full
    assert await usage(meta) == (100, 2, 1)


async def test_a_push_over_the_tag_limit_stores_nothing(meta: MetadataStore) -> None:
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_tags=3)
    await image(meta, "team/a", "m1", {"a": 1}, ["v1", "v2"], check)
    await image(meta, "team/b", "m2", {"b": 1}, ["v1"], check)
    with pytest.raises(QuotaExceeded) as refused:
        await image(meta, "team/b", "m3", {"c": 1}, ["v2"], check)
    assert (refused.value.what, refused.value.used, refused.value.limit) == ("tags", 4, 3)
    assert await meta.get_manifest("team/b", d("m3")) is None
    # Moving an existing tag adds none; deleting one frees room.
    await image(meta, "team/b", "m3", {"c": 1}, ["v1"], check)
    assert await meta.delete_tag("team/a", "v2")
    await image(meta, "team/b", "m4", {"d": 1}, ["v9"], check)
    assert await usage(meta) == (4, 3, 2)


async def test_each_quota_of_a_repository_is_checked(meta: MetadataStore) -> None:
    both = "team/*, other/*"
    await meta.set_up_quotas(covers(TEAM, both))
    checks = (QuotaCheck(TEAM, max_bytes=100), QuotaCheck(both, max_bytes=150))
    await image(meta, "other/x", "m1", {"x": 100}, [], QuotaCheck(both, max_bytes=150))
    await image(meta, "team/a", "m2", {"a": 50}, [], *checks)
    with pytest.raises(QuotaExceeded) as refused:
        await image(meta, "team/a", "m3", {"b": 1}, [], *checks)
    assert refused.value.key == both
    assert [(u.key, u.bytes) for u in await meta.quota_usage([TEAM, both])] == [
        (TEAM, 50),
        (both, 150),
    ]


async def test_setting_up_computes_usage_from_what_is_stored(meta: MetadataStore) -> None:
    await image(meta, "team/a", "m1", {"shared": 100, "a": 10}, ["v1"])
    await image(meta, "team/b", "m2", {"shared": 100}, ["v1", "v2"])
    await image(meta, "other/c", "m3", {"c": 1000}, ["v1"])
    await meta.link_blob("team/a", d("loose"), 500)  # unreferenced: not charged
    assert await meta.set_up_quotas(covers(TEAM)) == [TEAM]
    assert await usage(meta) == (110, 3, 2)
    # A quota no longer configured is dropped (when asked); set up again, it is computed afresh.
    assert await meta.set_up_quotas({}, drop_others=True) == []
    assert await meta.quota_usage([TEAM]) == []
    with pytest.raises(QuotaNotSetUp):
        await image(meta, "team/a", "m4", {"new": 1}, [], QuotaCheck(TEAM))
    assert await meta.set_up_quotas(covers(TEAM)) == [TEAM]
    assert await usage(meta) == (110, 3, 2)


async def test_setting_up_other_quotas_keeps_those_not_given(meta: MetadataStore) -> None:
    """What `cargobay quota` and the set-up retried at a push do with a configuration lacking a
    quota: its usage, charges and repositories stay, and pushes into it need no new set-up."""
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_bytes=1000)
    await image(meta, "team/a", "m1", {"a": 100, "b": 10}, ["v1"], check)
    assert await meta.set_up_quotas(covers("other/*")) == ["other/*"]
    assert await meta.set_up_quotas({}) == []
    assert await usage(meta) == (110, 1, 1)
    await image(meta, "team/a", "m2", {"c": 1}, ["v2"], check)  # no QuotaNotSetUp
    assert await meta.unlink_blob("team/a", d("a"))  # its charge is still there to remove
    assert await usage(meta) == (11, 2, 1)


@pytest.fixture
async def postgres_meta(postgres: PostgresServer) -> AsyncIterator[PostgresMetadataStore]:
    store = PostgresMetadataStore(postgres.create_database())
    store.migrate()
    yield store
    await store.close()


async def test_an_unlink_during_a_set_up_is_not_charged(
    postgres_meta: PostgresMetadataStore,
) -> None:
    """PostgreSQL only: an unlink committing after the set-up computed its charges from the
    links, but before the set-up committed, must still uncharge. (SQLite runs one write
    transaction at a time, so the two cannot overlap there.)"""
    meta = postgres_meta
    await image(meta, "team/a", "m1", {"a": 100, "b": 10}, ["v1"])
    # Hold the set-up inside its compute statement (after its snapshot): its insert of
    # (TEAM, b) waits for this uncommitted one.
    blocker = await asyncpg.connect(meta.url)
    blocker_txn = blocker.transaction()
    await blocker_txn.start()
    await blocker.execute(
        "INSERT INTO quota_blobs (quota, digest, size) VALUES ($1, $2, 10)", TEAM, d("b")
    )
    set_up = asyncio.create_task(meta.set_up_quotas(covers(TEAM)))
    for _ in range(500):
        await blocker.execute("SELECT pg_stat_clear_snapshot()")  # else fixed for the txn
        waiting = await blocker.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO quota_blobs%DISTINCT%'"
        )
        if waiting:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the set-up never reached its compute statement")
    unlink = asyncio.create_task(meta.unlink_blob("team/a", d("a")))
    await asyncio.sleep(0.2)  # time for the unlink to commit, if nothing holds it
    await blocker_txn.rollback()
    await blocker.close()
    assert await set_up == [TEAM]
    assert await unlink
    assert await usage(meta) == (10, 1, 1)


async def test_concurrent_pushes_never_exceed_the_limit(meta: MetadataStore) -> None:
    """20 pushes of 10-byte images at once into a 75-byte quota: exactly 7 pass."""
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_bytes=75)
    for i in range(20):
        await meta.link_blob(f"team/r{i % 4}", d(f"blob{i}"), 10)

    async def push(i: int) -> bool:
        record = manifest(f"m{i}", blob_references=(d(f"blob{i}"),))
        try:
            await meta.put_manifest(f"team/r{i % 4}", record, [f"t{i}"], quota_checks=[check])
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(push(i) for i in range(20)))
    assert sum(results) == 7
    assert (await usage(meta))[:2] == (70, 7)


async def test_concurrent_pushes_never_exceed_the_tag_limit(meta: MetadataStore) -> None:
    await meta.set_up_quotas(covers(TEAM))
    check = QuotaCheck(TEAM, max_tags=5)
    await meta.link_blob("team/a", d("base"), 10)
    await meta.link_blob("team/b", d("base"), 10)

    async def push(i: int) -> bool:
        record = manifest(f"m{i}", blob_references=(d("base"),))
        try:
            await meta.put_manifest(f"team/{'ab'[i % 2]}", record, [f"t{i}"], quota_checks=[check])
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(push(i) for i in range(20)))
    assert sum(results) == 5
    assert await usage(meta) == (10, 5, 2)
