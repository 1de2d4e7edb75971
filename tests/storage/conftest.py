"""Every blob store driver runs the same contract suite: add a driver to `DRIVERS`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cargobay.storage.base import BlobStore
from cargobay.storage.filesystem import FilesystemBlobStore
from cargobay.storage.s3 import S3BlobStore
from tests.services.seaweedfs import SeaweedFS


def s3_store(server: SeaweedFS, **options: Any) -> S3BlobStore:
    """A store on `server` under a prefix of its own, so tests sharing the bucket never meet."""
    settings: dict[str, Any] = {
        "endpoint": server.endpoint_url,
        "region": server.region,
        "path_style": True,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "prefix": f"tests/{uuid.uuid4()}",
        **options,
    }
    return S3BlobStore(server.bucket, **settings)


DRIVERS: dict[str, Callable[[pytest.FixtureRequest, Path], BlobStore]] = {
    "filesystem": lambda request, tmp: FilesystemBlobStore(tmp / "blobs"),
    # The session's SeaweedFS (started only when a test needs it), a fresh prefix per test.
    "s3": lambda request, tmp: s3_store(request.getfixturevalue("seaweedfs")),
}


@pytest.fixture(params=sorted(DRIVERS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    blob_store = DRIVERS[request.param](request, tmp_path)
    yield blob_store
    await blob_store.close()
