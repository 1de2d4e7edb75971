"""Every metadata store runs the same contract suite: add an implementation to `STORES`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cargobay.metadata.base import MetadataStore
from cargobay.metadata.postgres import PostgresMetadataStore
from cargobay.metadata.sqlite import SQLiteMetadataStore

STORES: dict[str, Callable[[pytest.FixtureRequest, Path], MetadataStore]] = {
    "sqlite": lambda request, tmp: SQLiteMetadataStore(tmp / "metadata.db"),
    # A fresh database per test on the session's server (started only when a test needs it).
    "postgres": lambda request, tmp: PostgresMetadataStore(
        request.getfixturevalue("postgres").create_database()
    ),
}


@pytest.fixture(params=sorted(STORES))
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    store = STORES[request.param](request, tmp_path)
    store.migrate()
    yield store
    await store.close()
