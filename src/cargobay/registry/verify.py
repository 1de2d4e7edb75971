"""Check that the blob store holds what the metadata says: every blob present, of the right
size, and (optionally, reading every byte) with the right digest. Used by `cargobay verify`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cargobay.metadata.base import MetadataStore
from cargobay.registry.digest import Digest, finish, new_hasher
from cargobay.storage.base import BlobStore

PAGE = 1000


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    wrong_digest: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong_size or self.wrong_digest)


async def verify_blobs(
    metadata: MetadataStore,
    blobs: BlobStore,
    *,
    digests: bool = False,
    progress: Callable[[int], None] = lambda size: None,
) -> VerifyReport:
    """Walk every blob the metadata knows; `progress(size)` after each one."""
    report = VerifyReport()
    last = None
    while page := await metadata.list_blobs(last, PAGE):
        for text, size in page:
            await _check(blobs, Digest.parse(text), size, digests, report)
            report.blobs += 1
            report.bytes += size
            progress(size)
        last = page[-1][0]
    return report


async def _check(
    blobs: BlobStore, digest: Digest, size: int, digests: bool, report: VerifyReport
) -> None:
    stat = await blobs.stat(digest)
    if stat is None:
        report.missing.append(str(digest))
    elif stat.size != size:
        report.wrong_size.append(str(digest))
    elif digests:
        hasher = new_hasher(digest.algorithm)
        async for chunk in blobs.read(digest):
            hasher.update(chunk)
        if finish(digest.algorithm, hasher) != digest:
            report.wrong_digest.append(str(digest))
