"""The metadata store contract (cargobay.metadata.base.MetadataStore), run against every store."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from cargobay.metadata.base import (
    ApiTokenRecord,
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    TagFixed,
    UploadLocked,
    UploadRecord,
)


def d(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(name: str, **fields: object) -> ManifestRecord:
    content = f'{{"name": "{name}"}}'.encode()
    return ManifestRecord(
        digest=d(name),
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=content,
        **fields,  # type: ignore[arg-type]
    )


async def test_unknown_repository(meta: MetadataStore) -> None:
    assert await meta.repository_exists("nope") is False
    assert await meta.list_tags("nope", None, 10) == []
    assert await meta.get_tagged_manifest("nope", "latest") is None


async def test_blob_links_are_per_repository(meta: MetadataStore) -> None:
    await meta.link_blob("a", d("blob"), 5)
    assert await meta.linked_blob_size("a", d("blob")) == 5
    assert await meta.linked_blob_size("b", d("blob")) is None
    assert await meta.blob_size(d("blob")) == 5
    assert await meta.repository_exists("a")
    await meta.link_blob("a", d("blob"), 5)  # idempotent
    assert await meta.unlink_blob("a", d("blob")) is True
    assert await meta.unlink_blob("a", d("blob")) is False
    assert await meta.linked_blob_size("a", d("blob")) is None
    assert await meta.blob_size(d("blob")) == 5  # the bytes are still known


async def test_mount_links_only_what_the_source_has(meta: MetadataStore) -> None:
    await meta.link_blob("src", d("blob"), 7)
    assert await meta.mount_blob("src", "dst", d("blob")) == 7
    assert await meta.linked_blob_size("dst", d("blob")) == 7
    assert await meta.mount_blob("src", "dst", d("blob")) == 7  # idempotent
    assert await meta.mount_blob("src", "other", d("missing")) is None
    assert await meta.mount_blob("nowhere", "other", d("blob")) is None
    assert await meta.linked_blob_size("other", d("blob")) is None
    assert await meta.unlink_blob("src", d("blob")) is True
    assert await meta.mount_blob("src", "third", d("blob")) is None  # gone from the source
    assert await meta.linked_blob_size("third", d("blob")) is None


async def test_mounts_racing_an_unlink_are_ordered(meta: MetadataStore) -> None:
    """Each mount sees the source link wholly before or after the unlink: mounts that saw
    it linked the blob, the rest did not, and the unlink happened exactly once."""
    await meta.link_blob("src", d("raced"), 3)
    results = await asyncio.gather(
        *(meta.mount_blob("src", f"dst{i}", d("raced")) for i in range(10)),
        meta.unlink_blob("src", d("raced")),
        *(meta.mount_blob("src", f"dst{i}", d("raced")) for i in range(10, 20)),
    )
    unlinked, mounts = results[10], [*results[:10], *results[11:]]
    assert unlinked is True
    for i, size in enumerate(mounts):
        assert size in (3, None)
        assert await meta.linked_blob_size(f"dst{i}", d("raced")) == size
    assert await meta.linked_blob_size("src", d("raced")) is None


async def test_put_and_get_manifest_by_digest_and_tag(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("config"), 2)
    record = manifest("m1", blob_references=(d("config"),), annotations={"k": "v"})
    await meta.put_manifest("r", record, ["v1", "latest"])
    got = await meta.get_manifest("r", record.digest)
    assert got is not None
    assert (got.content, got.media_type, got.annotations) == (
        record.content,
        record.media_type,
        {"k": "v"},
    )
    tagged = await meta.get_tagged_manifest("r", "latest")
    assert tagged is not None and tagged.digest == record.digest
    assert await meta.list_tags("r", None, 10) == ["latest", "v1"]


async def test_put_manifest_with_missing_references_stores_nothing(meta: MetadataStore) -> None:
    await meta.link_blob("other", d("config"), 2)  # in another repository: does not count
    record = manifest("m", blob_references=(d("config"),), manifest_references=(d("child"),))
    with pytest.raises(MissingReferences) as caught:
        await meta.put_manifest("r", record, ["t"])
    assert list(caught.value.blobs) == [d("config")]
    assert list(caught.value.manifests) == [d("child")]
    assert await meta.get_manifest("r", record.digest) is None
    assert await meta.list_tags("r", None, 10) == []


async def test_index_references_child_manifests(meta: MetadataStore) -> None:
    child = manifest("child")
    await meta.put_manifest("r", child, [])
    index = manifest("index", manifest_references=(child.digest,))
    await meta.put_manifest("r", index, ["multi"])
    got = await meta.get_tagged_manifest("r", "multi")
    assert got is not None and got.digest == index.digest


async def test_tag_moves(meta: MetadataStore) -> None:
    first, second = manifest("one"), manifest("two")
    await meta.put_manifest("r", first, ["t"])
    await meta.put_manifest("r", second, ["t"])
    got = await meta.get_tagged_manifest("r", "t")
    assert got is not None and got.digest == second.digest
    assert await meta.get_manifest("r", first.digest) is not None


async def test_delete_manifest_removes_its_tags_only(meta: MetadataStore) -> None:
    first, second = manifest("one"), manifest("two")
    await meta.put_manifest("r", first, ["a", "b"])
    await meta.put_manifest("r", second, ["c"])
    assert await meta.delete_manifest("r", first.digest) is True
    assert await meta.get_manifest("r", first.digest) is None
    assert await meta.list_tags("r", None, 10) == ["c"]
    assert await meta.delete_manifest("r", first.digest) is False
    assert await meta.delete_manifest("unknown-repo", first.digest) is False


async def test_delete_tag_keeps_manifest(meta: MetadataStore) -> None:
    record = manifest("one")
    await meta.put_manifest("r", record, ["a", "b"])
    assert await meta.delete_tag("r", "a") is True
    assert await meta.delete_tag("r", "a") is False
    assert await meta.list_tags("r", None, 10) == ["b"]
    assert await meta.get_manifest("r", record.digest) is not None


async def test_tags_are_paged_in_byte_order(meta: MetadataStore) -> None:
    tags = ["B", "a", "a1", "Z9", "_x", "0", "latest", "v1.0", "v1.0-rc"]
    await meta.put_manifest("r", manifest("m"), tags)
    assert await meta.list_tags("r", None, 100) == sorted(tags)
    page1 = await meta.list_tags("r", None, 4)
    page2 = await meta.list_tags("r", page1[-1], 4)
    page3 = await meta.list_tags("r", page2[-1], 4)
    assert page1 + page2 + page3 == sorted(tags)
    assert await meta.list_tags("r", "zzz", 4) == []


async def test_repositories_are_paged_in_byte_order(meta: MetadataStore) -> None:
    names = ["b/c", "a", "a/b", "a-b", "z"]
    for name in names:
        await meta.link_blob(name, d("x"), 1)
    assert await meta.list_repositories(None, 100) == sorted(names)
    assert await meta.list_repositories("a/b", 2) == sorted(names)[3:5]


async def test_referrers(meta: MetadataStore) -> None:
    subject = d("subject")
    sbom = manifest(
        "sbom", subject=subject, artifact_type="application/sbom", annotations={"a": "1"}
    )
    sig = manifest("sig", subject=subject, artifact_type="application/sig")
    unrelated = manifest("unrelated", subject=d("other"), artifact_type="application/sbom")
    for record in (sbom, sig, unrelated):
        await meta.put_manifest("r", record, [])
    found = await meta.list_referrers("r", subject, None, None, 10)
    assert sorted(r.digest for r in found) == sorted([sbom.digest, sig.digest])
    assert [r.digest for r in found] == sorted(r.digest for r in found)
    by_digest = {r.digest: r for r in found}
    assert by_digest[sbom.digest].annotations == {"a": "1"}
    assert by_digest[sbom.digest].size == len(sbom.content)
    filtered = await meta.list_referrers("r", subject, "application/sig", None, 10)
    assert [r.digest for r in filtered] == [sig.digest]
    first = await meta.list_referrers("r", subject, None, None, 1)
    rest = await meta.list_referrers("r", subject, None, first[0].digest, 10)
    assert [r.digest for r in first + rest] == [r.digest for r in found]
    assert await meta.list_referrers("other-repo", subject, None, None, 10) == []
    await meta.delete_manifest("r", sig.digest)
    assert [r.digest for r in await meta.list_referrers("r", subject, None, None, 10)] == [
        sbom.digest
    ]


async def test_upload_lifecycle(meta: MetadataStore) -> None:
    await meta.create_upload(UploadRecord(id="u1", repository="r", algorithm="sha256"))
    upload = await meta.get_upload("u1")
    assert upload is not None and (upload.size, upload.hash_state) == (0, None)
    assert await meta.update_upload("u1", 0, 10, b"state") is True
    assert await meta.update_upload("u1", 0, 20, b"stale") is False  # someone else moved it
    upload = await meta.get_upload("u1")
    assert upload is not None and (upload.size, upload.hash_state) == (10, b"state")
    assert await meta.delete_upload("u1") is True
    assert await meta.get_upload("u1") is None
    assert await meta.update_upload("u1", 10, 30, None) is False


async def test_complete_upload_links_blob_and_ends_session(meta: MetadataStore) -> None:
    upload = UploadRecord(id="u-done", repository="r", algorithm="sha256")
    await meta.create_upload(upload)
    await meta.complete_upload(upload, d("done"), 42)
    assert await meta.linked_blob_size("r", d("done")) == 42
    assert await meta.get_upload("u-done") is None


async def test_old_uploads_are_listed_for_expiry(meta: MetadataStore) -> None:
    await meta.create_upload(UploadRecord(id="old", repository="r", algorithm="sha256"))
    upload = await meta.get_upload("old")
    assert upload is not None
    assert [u.id for u in await meta.list_uploads_older_than(upload.updated_at + 1)] == ["old"]
    assert await meta.list_uploads_older_than(upload.updated_at - 1) == []


async def test_migrate_is_idempotent(meta: MetadataStore) -> None:
    await meta.put_manifest("r", manifest("m"), ["t"])
    meta.migrate()
    assert await meta.list_tags("r", None, 10) == ["t"]


async def test_upload_lock_is_exclusive_and_released(meta: MetadataStore) -> None:
    await meta.create_upload(UploadRecord(id="u-lock", repository="r", algorithm="sha256"))
    async with meta.lock_upload("u-lock"):
        with pytest.raises(UploadLocked):
            async with meta.lock_upload("u-lock"):
                pass
        async with meta.lock_upload("another-upload"):
            pass  # locks are per upload
    async with meta.lock_upload("u-lock"):
        pass  # released on exit
    with pytest.raises(RuntimeError):
        async with meta.lock_upload("u-lock"):
            raise RuntimeError("holder fails")
    async with meta.lock_upload("u-lock"):
        pass  # released on error too
    await meta.delete_upload("u-lock")


async def test_api_tokens(meta: MetadataStore) -> None:
    record = ApiTokenRecord(
        id="t1", name="ci", secret_hash=b"\x01" * 32, scopes=(("team/*", ("pull", "push")),)
    )
    await meta.create_api_token(record)
    stored = await meta.get_api_token("t1")
    assert stored is not None
    assert (stored.name, stored.secret_hash, stored.scopes) == (
        "ci",
        b"\x01" * 32,
        (("team/*", ("pull", "push")),),
    )
    assert stored.revoked_at is None and stored.created_at > 0 and stored.kind == "robot"
    refresh = ApiTokenRecord(
        id="r1", name="alice", secret_hash=b"\x02" * 32, scopes=(), kind="refresh"
    )
    await meta.create_api_token(refresh)
    assert (await meta.get_api_token("r1")).kind == "refresh"  # type: ignore[union-attr]
    assert [t.id for t in await meta.list_api_tokens()] == ["t1", "r1"]
    assert await meta.revoke_api_token("t1") is True
    assert await meta.revoke_api_token("t1") is False
    revoked = await meta.get_api_token("t1")
    assert revoked is not None and revoked.revoked_at is not None
    assert await meta.get_api_token("nope") is None


async def test_put_manifest_again_with_repeated_tags_and_references(meta: MetadataStore) -> None:
    await meta.link_blob("r", d("config"), 2)
    child = manifest("child")
    await meta.put_manifest("r", child, ["c", "c"])
    refs = {"blob_references": (d("config"),) * 2, "manifest_references": (child.digest,) * 2}
    record = manifest("m", **refs)
    await meta.put_manifest("r", record, ["a", "b", "a"])
    await meta.put_manifest("r", manifest("m", artifact_type="application/x", **refs), ["b", "c"])
    got = await meta.get_tagged_manifest("r", "c")
    assert got is not None and got.digest == record.digest
    assert got.artifact_type == "application/x"  # stored again: the fields were replaced
    assert await meta.list_tags("r", None, 10) == ["a", "b", "c"]


async def test_concurrent_puts_moving_one_tag(meta: MetadataStore) -> None:
    records = [manifest(f"m{i}") for i in range(20)]
    await asyncio.gather(*(meta.put_manifest("r", r, ["latest", "stable"]) for r in records))
    latest = await meta.get_tagged_manifest("r", "latest")
    assert latest is not None and latest.digest in {r.digest for r in records}
    assert await meta.list_tags("r", None, 10) == ["latest", "stable"]
    for record in records:
        assert await meta.get_manifest("r", record.digest) is not None


async def test_statistics_count_what_is_stored(meta: MetadataStore) -> None:
    empty = await meta.statistics()
    assert (empty.repositories, empty.blobs, empty.blob_bytes, empty.manifests) == (0, 0, 0, 0)
    await meta.link_blob("a/b", d("layer"), 100)
    await meta.link_blob("a/c", d("layer"), 100)  # stored once, linked twice
    await meta.link_blob("a/b", d("config"), 7)
    record = manifest("m", blob_references=(d("layer"), d("config")))
    await meta.put_manifest("a/b", record, ["v1", "latest"])
    await meta.create_upload(UploadRecord("u1", "a/b", "sha256"))
    stats = await meta.statistics()
    assert (stats.repositories, stats.blobs, stats.blob_bytes) == (2, 2, 107)
    assert (stats.manifests, stats.tags, stats.uploads) == (1, 2, 1)


async def test_list_blobs_pages_in_byte_order(meta: MetadataStore) -> None:
    digests = sorted(d(f"blob{i}") for i in range(5))
    for i, digest in enumerate(digests):
        await meta.link_blob("r/a" if i % 2 else "r/b", digest, i)
    first = await meta.list_blobs(None, 3)
    assert first == [(digests[i], i) for i in range(3)]
    assert await meta.list_blobs(first[-1][0], 3) == [(digests[i], i) for i in (3, 4)]


async def test_fixed_tag_is_created_and_pushed_again_but_never_moved(meta: MetadataStore) -> None:
    first, second = manifest("first"), manifest("second")
    await meta.put_manifest("r", first, ["v1", "latest"], fixed_tags=["v1"])
    await meta.put_manifest("r", first, ["v1"], fixed_tags=["v1"])  # the same manifest again
    with pytest.raises(TagFixed) as refused:
        await meta.put_manifest("r", second, ["latest", "new", "v1"], fixed_tags=["v1", "new"])
    assert refused.value.tag == "v1"
    # Nothing of the refused put is stored: not the manifest, not its other tags.
    assert await meta.get_manifest("r", second.digest) is None
    assert await meta.list_tags("r", None, 10) == ["latest", "v1"]
    latest = await meta.get_tagged_manifest("r", "latest")
    assert latest is not None and latest.digest == first.digest
    # Fixed tags the put does not write do not matter; unfixed tags move as always.
    await meta.put_manifest("r", second, ["latest"], fixed_tags=["v1"])
    tagged = await meta.get_tagged_manifest("r", "v1")
    assert tagged is not None and tagged.digest == first.digest
    latest = await meta.get_tagged_manifest("r", "latest")
    assert latest is not None and latest.digest == second.digest


async def test_fixed_tags_are_per_repository(meta: MetadataStore) -> None:
    await meta.put_manifest("a", manifest("first"), ["v1"], fixed_tags=["v1"])
    await meta.put_manifest("b", manifest("second"), ["v1"], fixed_tags=["v1"])
    tagged = await meta.get_tagged_manifest("b", "v1")
    assert tagged is not None and tagged.digest == manifest("second").digest


async def test_concurrent_first_puts_of_a_fixed_tag(meta: MetadataStore) -> None:
    """Exactly one of concurrent first pushes of a fixed tag wins; the others store nothing."""
    records = [manifest(f"m{i}") for i in range(20)]
    results = await asyncio.gather(
        *(meta.put_manifest("r", r, ["v1"], fixed_tags=["v1"]) for r in records),
        return_exceptions=True,
    )
    winners = [r for r, result in zip(records, results, strict=True) if result is None]
    assert len(winners) == 1, results
    assert all(isinstance(result, TagFixed) for result in results if result is not None)
    tagged = await meta.get_tagged_manifest("r", "v1")
    assert tagged is not None and tagged.digest == winners[0].digest
    for record in records:
        stored = await meta.get_manifest("r", record.digest)
        assert (stored is not None) == (record is winners[0])


async def test_manifest_tags(meta: MetadataStore) -> None:
    first, second = manifest("first"), manifest("second")
    await meta.put_manifest("r", first, ["b", "a", "c"])
    await meta.put_manifest("r", second, ["c"])
    assert await meta.manifest_tags("r", first.digest) == ["a", "b"]
    assert await meta.manifest_tags("r", second.digest) == ["c"]
    assert await meta.manifest_tags("other", first.digest) == []
    assert await meta.manifest_tags("r", d("unknown")) == []
