"""The retention part of the metadata store contract, run against every store."""

from __future__ import annotations

import asyncio
import time

from cargobay.metadata.base import (
    PULL_TIME_PRECISION,
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    Pull,
)
from tests.metadata.test_contract import d, manifest


async def test_repository_state_reads_tags_manifests_and_children(meta: MetadataStore) -> None:
    empty = await meta.repository_state("nope")
    assert (empty.tags, empty.manifests, empty.children) == ([], [], [])
    before = time.time()
    await meta.put_manifest("r", manifest("child"), [])
    await meta.put_manifest("r", manifest("index", manifest_references=(d("child"),)), ["v1"])
    await meta.put_manifest("r", manifest("sig", subject=d("index")), [])
    state = await meta.repository_state("r")
    assert [(t.name, t.digest) for t in state.tags] == [("v1", d("index"))]
    assert before <= state.tags[0].pushed_at <= time.time()
    by_digest = {m.digest: m for m in state.manifests}
    assert set(by_digest) == {d("child"), d("index"), d("sig")}
    assert by_digest[d("sig")].subject == d("index")
    assert by_digest[d("child")].subject is None
    assert all(m.pulled_at is None and m.pushed_at >= before for m in state.manifests)
    assert state.children == [(d("index"), d("child"))]


async def test_a_tag_is_deleted_only_where_it_still_points(meta: MetadataStore) -> None:
    await meta.put_manifest("r", manifest("a"), ["t"])
    await meta.put_manifest("r", manifest("b"), ["t"])  # moved by a push
    assert await meta.delete_tag_if("r", "t", d("a")) is False
    assert await meta.manifest_tags("r", d("b")) == ["t"]
    assert await meta.delete_tag_if("r", "t", d("b")) is True
    assert await meta.list_tags("r", None, 10) == []
    assert await meta.delete_tag_if("r", "t", d("b")) is False
    assert await meta.delete_tag_if("nope", "t", d("b")) is False
    assert await meta.get_manifest("r", d("b")) is not None  # the manifest stays


async def test_a_manifest_is_deleted_only_when_nothing_keeps_it(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 3)
    await meta.put_manifest("r", manifest("child", blob_references=(d("layer"),)), [])
    await meta.put_manifest("r", manifest("index", manifest_references=(d("child"),)), ["v1"])
    await meta.put_manifest("r", manifest("sig", subject=d("index")), [])
    assert await meta.delete_manifest_if_untagged("r", d("index")) is False  # tagged
    assert await meta.delete_manifest_if_untagged("r", d("child")) is False  # in an index
    assert await meta.delete_manifest_if_untagged("r", d("sig")) is False  # its subject exists
    assert await meta.delete_tag_if("r", "v1", d("index"))
    assert await meta.delete_manifest_if_untagged("r", d("index")) is True
    assert await meta.delete_manifest_if_untagged("r", d("sig")) is True
    before = time.time()
    assert await meta.delete_manifest_if_untagged("r", d("child")) is True
    assert await meta.get_manifest("r", d("child")) is None
    # Deleted as delete_manifest deletes: what it referenced is queued for review from now.
    reviews = await meta.due_link_reviews(1e12, 10)
    assert [(r.digest, r.since >= before) for r in reviews] == [(d("layer"), True)]
    assert await meta.delete_manifest_if_untagged("r", d("child")) is False
    assert await meta.delete_manifest_if_untagged("nope", d("child")) is False
    # A referrer whose subject is not in the repository goes like any untagged manifest.
    await meta.put_manifest("r", manifest("orphan-sig", subject=d("gone")), [])
    assert await meta.delete_manifest_if_untagged("r", d("orphan-sig")) is True


async def test_a_child_shared_by_two_indexes_stays_until_both_go(meta: MetadataStore) -> None:
    await meta.put_manifest("r", manifest("child"), [])
    for index in ("one", "two"):
        await meta.put_manifest("r", manifest(index, manifest_references=(d("child"),)), [])
    assert await meta.delete_manifest_if_untagged("r", d("one"))
    assert await meta.delete_manifest_if_untagged("r", d("child")) is False
    assert await meta.delete_manifest_if_untagged("r", d("two"))
    assert await meta.delete_manifest_if_untagged("r", d("child"))


async def test_pull_times_are_recorded_in_batches(meta: MetadataStore) -> None:
    await meta.put_manifest("r", manifest("a"), [])
    await meta.put_manifest("r", manifest("b"), [])
    now = time.time()
    await meta.record_pulls(
        [
            Pull("r", d("a"), now),
            Pull("r", d("missing"), now),  # deleted meanwhile: ignored
            Pull("nope", d("a"), now),
        ]
    )
    await meta.record_pulls([])

    async def pulled() -> dict[str, float | None]:
        return {m.digest: m.pulled_at for m in (await meta.repository_state("r")).manifests}

    assert await pulled() == {d("a"): now, d("b"): None}
    await meta.record_pulls([Pull("r", d("a"), now + PULL_TIME_PRECISION / 2)])
    assert (await pulled())[d("a")] == now  # within the precision: not written again
    await meta.record_pulls([Pull("r", d("a"), now - 1000)])
    assert (await pulled())[d("a")] == now  # never moved back
    later = now + 2 * PULL_TIME_PRECISION
    await meta.record_pulls([Pull("r", d("a"), later), Pull("r", d("b"), later)])
    assert await pulled() == {d("a"): later, d("b"): later}


async def test_a_push_racing_a_conditional_delete_is_never_lost(meta: MetadataStore) -> None:
    """A manifest being deleted is re-pushed with a tag, or pulled into an index, at the same
    moment: afterwards either the push failed cleanly or everything it made exists."""
    for round_ in range(20):
        child = manifest(f"child-{round_}")
        await meta.put_manifest("r", child, [])
        index = manifest(f"index-{round_}", manifest_references=(child.digest,))

        async def push_index(index: ManifestRecord = index, tag: str = f"i{round_}") -> bool:
            try:
                await meta.put_manifest("r", index, [tag])
                return True
            except MissingReferences:  # the child went first
                return False

        _, _, indexed = await asyncio.gather(
            meta.delete_manifest_if_untagged("r", child.digest),
            meta.put_manifest("r", child, [f"c{round_}"]),  # tags it (again, if deleted)
            push_index(),
        )
        assert await meta.manifest_tags("r", child.digest) == [f"c{round_}"]
        assert await meta.get_manifest("r", child.digest) is not None
        if indexed:
            assert await meta.get_tagged_manifest("r", f"i{round_}") is not None


async def test_a_manifest_pushed_or_pulled_again_since_the_cutoff_stays(
    meta: MetadataStore,
) -> None:
    """An old untagged manifest a run decided to delete for its age, pushed again by digest
    (or pulled) before the delete, stays: the push time is refreshed and checked again."""
    for name in ("repushed", "pulled", "idle"):
        await meta.put_manifest("r", manifest(name), [])
    await asyncio.sleep(0.01)
    cutoff = time.time()  # those three are older than this
    await asyncio.sleep(0.01)
    await meta.put_manifest("r", manifest("repushed"), [])
    await meta.record_pulls([Pull("r", d("pulled"), time.time())])
    pushed = {m.digest: m.pushed_at for m in (await meta.repository_state("r")).manifests}
    assert pushed[d("repushed")] > cutoff > pushed[d("idle")]
    assert await meta.delete_manifest_if_untagged("r", d("repushed"), cutoff) is False
    assert await meta.delete_manifest_if_untagged("r", d("pulled"), cutoff) is False
    assert await meta.get_manifest("r", d("repushed")) is not None
    assert await meta.delete_manifest_if_untagged("r", d("idle"), cutoff) is True
    later = time.time() + 1
    assert await meta.delete_manifest_if_untagged("r", d("repushed"), later) is True
    assert await meta.delete_manifest_if_untagged("r", d("pulled"), later) is True
    assert await meta.delete_manifest_if_untagged("r", d("idle"), later) is False  # gone


async def test_a_repush_racing_an_age_based_delete_is_never_lost(meta: MetadataStore) -> None:
    """A manifest deleted for its age is pushed again by digest at the same moment, then an
    index referencing it: the push either came first (the manifest stays) or after."""
    for round_ in range(20):
        child = manifest(f"child-{round_}")
        await meta.put_manifest("r", child, [])
        cutoff = time.time() + 0.001  # the child is old
        await asyncio.sleep(0.002)
        await asyncio.gather(
            meta.delete_manifest_if_untagged("r", child.digest, cutoff),
            meta.put_manifest("r", child, []),
        )
        assert await meta.get_manifest("r", child.digest) is not None
        index = manifest(f"index-{round_}", manifest_references=(child.digest,))
        await meta.put_manifest("r", index, [])  # no MissingReferences


async def test_a_tag_pushed_again_since_it_was_read_stays(meta: MetadataStore) -> None:
    await meta.put_manifest("r", manifest("a"), ["t"])
    [read] = (await meta.repository_state("r")).tags
    await asyncio.sleep(0.01)  # a later push time than the one read
    await meta.put_manifest("r", manifest("a"), ["t"])  # the same tag, pushed again
    assert await meta.delete_tag_if("r", "t", d("a"), read.pushed_at) is False
    assert await meta.list_tags("r", None, 10) == ["t"]
    [again] = (await meta.repository_state("r")).tags
    assert await meta.delete_tag_if("r", "t", d("a"), again.pushed_at) is True
