"""The garbage collection part of the metadata store contract, run against every store."""

from __future__ import annotations

import asyncio
import time

import pytest

from cargobay.metadata.base import MetadataStore, TagFixed, UploadRecord
from tests.metadata.test_contract import d, manifest

FUTURE = 1e12  # a cutoff every review is before: everything queued is due


async def due_links(meta: MetadataStore) -> set[tuple[str, str]]:
    return {(r.repository, r.digest) for r in await meta.due_link_reviews(FUTURE, 1000)}


async def collect_all(meta: MetadataStore, cutoff: float = FUTURE) -> tuple[int, list[str]]:
    """What a collection does, in the metadata: remove due links, tombstone due blobs."""
    links = await meta.collect_links(await meta.due_link_reviews(cutoff, 1000), cutoff)
    reviews = await meta.due_blob_reviews(cutoff, 1000)
    tombstones = await meta.collect_blobs([r.digest for r in reviews], cutoff)
    return len(links), [t.digest for t in tombstones]


async def test_an_unreferenced_upload_is_collected_after_the_delay(meta: MetadataStore) -> None:
    upload = UploadRecord(
        id="11111111-1111-1111-1111-111111111111", repository="r", algorithm="sha256"
    )
    await meta.create_upload(upload)
    await meta.complete_upload(upload, d("layer"), 10)
    assert await due_links(meta) == {("r", d("layer"))}
    assert await collect_all(meta, cutoff=time.time() - 3600) == (0, [])  # not due yet
    assert await meta.linked_blob_size("r", d("layer")) == 10
    assert await collect_all(meta) == (1, [d("layer")])
    assert await meta.linked_blob_size("r", d("layer")) is None
    assert await meta.blob_size(d("layer")) is None  # readers see it as gone
    assert await meta.link_existing_blob("other", d("layer")) is None  # and cannot mount it
    assert [t.digest for t in await meta.tombstones(10)] == [d("layer")]
    assert [t.size for t in await meta.tombstones(10)] == [10]
    assert await meta.is_tombstoned(d("layer"))
    await meta.forget_tombstones([d("layer")])
    assert await meta.tombstones(10) == []
    backlog = await meta.review_backlog()
    assert (backlog.links, backlog.blobs, backlog.tombstones) == (0, 0, 0)


async def test_referenced_links_stay_until_their_manifest_is_deleted(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("config"), 2)
    await meta.link_blob("r", d("layer"), 3)
    record = manifest("m", blob_references=(d("config"), d("layer")))
    await meta.put_manifest("r", record, [])  # untagged: kept all the same
    assert await collect_all(meta) == (0, [])
    assert await due_links(meta) == set()  # reviewed and dropped: referenced
    assert await meta.linked_blob_size("r", d("layer")) == 3
    assert await meta.delete_manifest("r", record.digest)
    assert await due_links(meta) == {("r", d("config")), ("r", d("layer"))}
    assert await collect_all(meta) == (2, sorted([d("config"), d("layer")]))


async def test_a_blob_linked_elsewhere_survives(meta: MetadataStore) -> None:
    await meta.link_blob("a", d("shared"), 4)
    assert await meta.mount_blob("a", "b", d("shared")) == 4
    record = manifest("m", blob_references=(d("shared"),))
    await meta.put_manifest("b", record, ["t"])
    assert await collect_all(meta) == (1, [])  # a's link goes, b's stays: the blob too
    assert await meta.linked_blob_size("b", d("shared")) == 4
    assert await meta.blob_size(d("shared")) == 4
    assert await meta.tombstones(10) == []


async def test_a_touch_postpones_the_review(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 5)
    [queued] = await meta.due_link_reviews(FUTURE, 10)
    # A HEAD with a 60-second grace delay: the review now starts 60 s from now ...
    assert await meta.linked_blob_size("r", d("layer"), keep_for=60) == 5
    [touched] = await meta.due_link_reviews(FUTURE, 10)
    assert touched.since >= queued.since + 59
    # ... so a collection with that delay (cutoff: now - 60 s) or even "now" leaves it.
    assert await collect_all(meta, cutoff=time.time()) == (0, [])
    assert await meta.linked_blob_size("r", d("layer")) == 5
    # HEADs within that time write nothing: the review stays where the first one put it.
    assert await meta.linked_blob_size("r", d("layer"), keep_for=60) == 5
    [again] = await meta.due_link_reviews(FUTURE, 10)
    assert again.since == touched.since
    assert await meta.linked_blob_size("r", d("missing"), keep_for=60) is None


async def test_touch_after_collection_finds_nothing(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 5)
    assert await collect_all(meta) == (1, [d("layer")])
    assert await meta.linked_blob_size("r", d("layer"), keep_for=60) is None


async def test_an_upload_after_the_decision_revives_the_blob(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 5)
    assert await collect_all(meta) == (1, [d("layer")])
    upload = UploadRecord(
        id="22222222-2222-2222-2222-222222222222", repository="s", algorithm="sha256"
    )
    await meta.create_upload(upload)
    await meta.complete_upload(upload, d("layer"), 5)
    assert not await meta.is_tombstoned(d("layer"))  # its bytes must stay
    assert await meta.tombstones(10) == []
    assert await meta.linked_blob_size("s", d("layer")) == 5


async def test_unlinking_queues_the_blob(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 5)
    assert await meta.unlink_blob("r", d("layer"))
    assert await due_links(meta) == set()
    assert [r.digest for r in await meta.due_blob_reviews(FUTURE, 10)] == [d("layer")]
    assert await collect_all(meta) == (0, [d("layer")])


async def test_dry_runs_change_nothing(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 5)
    reviews = await meta.due_link_reviews(FUTURE, 10)
    would = await meta.collect_links(reviews, FUTURE, dry_run=True)
    assert [(r.repository, r.digest) for r in would] == [("r", d("layer"))]
    unlinked = frozenset((r.repository_id, r.digest) for r in would)
    blobs = await meta.collect_blobs([d("layer")], FUTURE, dry_run=True, unlinked=unlinked)
    assert [(t.digest, t.size) for t in blobs] == [(d("layer"), 5)]
    assert await meta.collect_blobs([d("layer")], FUTURE, dry_run=True) == []  # still linked
    assert await meta.linked_blob_size("r", d("layer")) == 5
    assert await due_links(meta) == {("r", d("layer"))}
    assert await meta.tombstones(10) == []


async def test_unknown_blobs_are_queued_once(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("known"), 5)
    assert await meta.queue_unknown_blobs([d("known"), d("orphan")]) == 1
    assert await meta.queue_unknown_blobs([d("orphan")]) == 0
    assert [r.digest for r in await meta.due_blob_reviews(FUTURE, 10)] == [d("orphan")]
    _, tombstoned = await collect_all(meta)
    assert d("orphan") in tombstoned
    sizes = {t.digest: t.size for t in await meta.tombstones(10)}
    assert sizes[d("orphan")] == -1  # the metadata never knew its size


async def test_blob_lock_is_exclusive(meta: MetadataStore) -> None:
    order: list[str] = []
    held = asyncio.Event()

    async def first() -> None:
        async with meta.lock_blob(d("x")):
            order.append("first in")
            held.set()
            await asyncio.sleep(0.2)
            order.append("first out")

    async def second() -> None:
        await held.wait()
        async with meta.lock_blob(d("x")):
            order.append("second in")

    async def other_digest() -> None:
        await held.wait()
        async with meta.lock_blob(d("y-other")):
            order.append("other in")

    await asyncio.gather(first(), second(), other_digest())
    assert order.index("second in") > order.index("first out")
    assert order.index("other in") < order.index("first out")  # other digests do not wait


async def test_deciding_and_linking_race_to_one_outcome(meta: MetadataStore) -> None:
    """Mounts racing the collection of their source: each mount either found the link (and
    the blob then survives, linked into its target) or not (nothing linked)."""
    for round_ in range(5):
        digest = d(f"raced{round_}")
        await meta.link_blob("src", digest, 3)
        results = await asyncio.gather(
            *(meta.mount_blob("src", f"dst{i}", digest) for i in range(5)),
            collect_all(meta),
            *(meta.link_existing_blob(f"auto{i}", digest) for i in range(5)),
        )
        mounted = [r for r in results if r == 3]
        blob_gone = await meta.blob_size(digest) is None
        if mounted:
            assert not blob_gone, "a mount succeeded but its blob was collected"
        for i in range(5):
            for name in (f"dst{i}", f"auto{i}"):
                size = await meta.linked_blob_size(name, digest)
                assert size is None or not blob_gone
        await collect_all(meta)  # clean up for the next round
        await meta.forget_tombstones([t.digest for t in await meta.tombstones(100)])


async def test_a_referenced_blob_stays_when_its_link_is_deleted(meta: MetadataStore) -> None:
    """DELETE of a blob link while a manifest of the repository references the blob: the link
    goes (the repository no longer serves it), the bytes stay for the manifest, and go once
    the manifest is deleted."""
    await meta.link_blob("r", d("layer"), 5)
    record = manifest("m", blob_references=(d("layer"),))
    await meta.put_manifest("r", record, ["t"])
    assert await meta.unlink_blob("r", d("layer"))
    assert await collect_all(meta) == (0, [])
    assert await meta.blob_size(d("layer")) == 5
    assert await meta.delete_manifest("r", record.digest)
    # The link's review (queued by the delete) finds the link gone and re-queues the blob.
    assert await collect_all(meta) == (0, [d("layer")])


async def test_a_stale_tombstone_does_not_keep_a_blob_forever(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("layer"), 5)
    assert await collect_all(meta) == (1, [d("layer")])
    await meta.link_blob("s", d("layer"), 5)  # back, without removing the tombstone
    assert not await meta.is_tombstoned(d("layer"))
    assert await meta.unlink_blob("s", d("layer"))
    assert await collect_all(meta) == (0, [d("layer")])  # decided again
    assert await meta.is_tombstoned(d("layer"))
    assert await meta.blob_size(d("layer")) is None


async def test_delete_manifest_keeps_protected_tags(meta: MetadataStore) -> None:
    record = manifest("m")
    await meta.put_manifest("r", record, ["v1", "latest"])
    with pytest.raises(TagFixed) as refused:
        await meta.delete_manifest(
            "r", record.digest, protected=lambda tags: [t for t in tags if t.startswith("v")]
        )
    assert refused.value.tag == "v1"
    assert await meta.manifest_tags("r", record.digest) == ["latest", "v1"]
    assert await meta.delete_manifest("r", record.digest, protected=lambda tags: [])
    assert await meta.get_manifest("r", record.digest) is None
