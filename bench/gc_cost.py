"""What a garbage collection costs per reviewed object, on both setups.

    python -m bench.gc_cost [--objects N]

Queues N blob links in 10 repositories (as N uploads do), references every other one from a
manifest, deletes the images of half of those, and times one whole collection (links reviewed,
blobs tombstoned, bytes deleted) with the real stores: files + SQLite, and S3 (SeaweedFS) +
PostgreSQL started on loopback like the tests do. Prints wall time and this process's CPU per
reviewed object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import tempfile
import time
from pathlib import Path

from cargobay.config import GCConfig
from cargobay.lifecycle.gc import GarbageCollector
from cargobay.metadata.base import ManifestRecord, MetadataStore, UploadRecord
from cargobay.metadata.postgres import PostgresMetadataStore
from cargobay.metadata.sqlite import SQLiteMetadataStore
from cargobay.registry.digest import Digest
from cargobay.storage.base import BlobStore
from cargobay.storage.filesystem import FilesystemBlobStore
from cargobay.storage.s3 import S3BlobStore
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import SeaweedFS


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _fill(metadata: MetadataStore, blobs: BlobStore, objects: int) -> int:
    """Store `objects` small blobs; reference half, delete half of those images; returns how
    many reviews the collection will find."""
    digests = []
    for i in range(objects):
        data = f"blob {i}".encode()
        digest = Digest.of(data, "sha256")
        upload = UploadRecord(id=f"00000000-0000-4000-8000-{i:012d}", repository=f"r{i % 10}",
                              algorithm="sha256")  # fmt: skip
        await blobs.start_upload(upload.id)

        async def body(data: bytes = data) -> object:
            yield data

        await blobs.append_upload(upload.id, 0, body())  # type: ignore[arg-type]
        await blobs.commit_upload(upload.id, len(data), digest)
        await metadata.create_upload(upload)
        await metadata.complete_upload(upload, str(digest), len(data))
        digests.append((upload.repository, str(digest)))
    for i in range(0, objects, 2):
        repository, digest = digests[i]
        content = f'{{"layers": ["{digest}"]}}'.encode()
        record = ManifestRecord(
            digest="sha256:" + hashlib.sha256(content).hexdigest(),
            media_type="application/vnd.oci.image.manifest.v1+json",
            content=content,
            blob_references=(digest,),
        )
        await metadata.put_manifest(repository, record, [f"t{i}"])
        if i % 4 == 0:
            await metadata.delete_manifest(repository, record.digest)
    return objects


async def _measure(label: str, metadata: MetadataStore, blobs: BlobStore, objects: int) -> None:
    metadata.migrate()
    await _fill(metadata, blobs, objects)
    collector = GarbageCollector(metadata, blobs, GCConfig(delay_seconds=0))
    await asyncio.sleep(0.01)  # the cutoff is "now": everything queued before it is due
    started, cpu = time.perf_counter(), _cpu()
    report = await collector.collect()
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    assert report is not None
    reviewed = objects + len(report.blobs)
    print(
        f"{label}: {objects} links reviewed, {len(report.links)} removed,"
        f" {len(report.blobs)} blobs deleted in {seconds:.2f} s:"
        f" {seconds / reviewed * 1e6:.0f} us wall, {cpu / reviewed * 1e6:.0f} us CPU"
        " (this process) per reviewed object"
    )
    await metadata.close()
    await blobs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        asyncio.run(
            _measure(
                "files + SQLite",
                SQLiteMetadataStore(root / "metadata.db", synchronous="FULL"),
                FilesystemBlobStore(root / "blobs"),
                args.objects,
            )
        )
        postgres = PostgresServer().start()  # its own folder, reachable by its user
        seaweedfs = SeaweedFS(root / "s3").start()
        try:
            s3 = S3BlobStore(
                seaweedfs.bucket,
                endpoint=seaweedfs.endpoint_url,
                region=seaweedfs.region,
                path_style=True,
                access_key_id=seaweedfs.access_key,
                secret_access_key=seaweedfs.secret_key,
                prefix="gc-cost",
            )
            asyncio.run(
                _measure(
                    "S3 + PostgreSQL",
                    PostgresMetadataStore(postgres.create_database()),
                    s3,
                    args.objects,
                )
            )
        finally:
            seaweedfs.stop()
            postgres.stop()


if __name__ == "__main__":
    main()
