"""Every metadata store runs the same contract suite: add an implementation to `STORES`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cargobay.metadata.base import MetadataStore
from cargobay.metadata.sqlite import SQLiteMetadataStore

STORES: dict[str, Callable[[Path], MetadataStore]] = {
    "sqlite": lambda tmp: SQLiteMetadataStore(tmp / "metadata.db"),
}


@pytest.fixture(params=sorted(STORES))
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    store = STORES[request.param](tmp_path)
    store.migrate()
    yield store
    await store.close()
