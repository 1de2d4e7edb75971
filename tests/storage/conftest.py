"""Every blob store driver runs the same contract suite: add a driver to `DRIVERS`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cargobay.storage.base import BlobStore
from cargobay.storage.filesystem import FilesystemBlobStore

DRIVERS: dict[str, Callable[[Path], BlobStore]] = {
    "filesystem": lambda tmp: FilesystemBlobStore(tmp / "blobs"),
}


@pytest.fixture(params=sorted(DRIVERS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    blob_store = DRIVERS[request.param](tmp_path)
    yield blob_store
    await blob_store.close()
