from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import RegistryProcess
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import SeaweedFS

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# httpx builds a TLS context for every client, even for plain HTTP (~40 ms of CPU): share one.
TLS_CONTEXT = ssl.create_default_context()


def require_tool(name: str) -> str:
    """The path of an external tool; skip the test without it, or fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install-test-tools.sh installs it as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def scaleout_config(
    seaweedfs: SeaweedFS, database_url: str, prefix: str, **s3: object
) -> dict[str, object]:
    """Config for one instance of a scaled-out registry: its blobs under `prefix` in the
    bucket, its metadata in `database_url` (instances given the same two share one registry)."""
    return {
        "storage": {
            "driver": "s3",
            "s3": {
                "bucket": seaweedfs.bucket,
                "endpoint": seaweedfs.endpoint_url,
                "region": seaweedfs.region,
                "path_style": True,
                "access_key_id": seaweedfs.access_key,
                "secret_access_key": seaweedfs.secret_key,
                "prefix": prefix,
                **s3,
            },
        },
        "metadata": {"driver": "postgres", "url": database_url},
    }


# The API suite and the client tests run against both setups: embedded (files + SQLite) and
# scaled out (S3 on SeaweedFS + PostgreSQL).
BACKENDS = ["embedded", "s3+postgres"]


@pytest.fixture(scope="session", params=BACKENDS)
def registry_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    """One registry (2 workers) per backend, shared by the whole session."""
    config = None
    if request.param != "embedded":
        seaweedfs = request.getfixturevalue("seaweedfs")
        postgres = request.getfixturevalue("postgres")
        config = scaleout_config(seaweedfs, postgres.create_database("api"), "api")
    server = RegistryProcess(tmp_path_factory.mktemp("registry") / "data", config=config)
    yield server.start()
    server.stop()


@pytest.fixture
def client(registry_server: RegistryProcess) -> Iterator[httpx.Client]:
    # follow_redirects: with S3, blob GETs answer 307 to a presigned URL, as the spec allows.
    with httpx.Client(
        base_url=registry_server.url, timeout=60, follow_redirects=True, verify=TLS_CONTEXT
    ) as c:
        yield c


@pytest.fixture
def start_registry(tmp_path: Path) -> Iterator[Callable[..., RegistryProcess]]:
    """Start extra registries (own data dir, optional config); all stopped after the test."""
    started: list[RegistryProcess] = []

    def start(
        *,
        data_dir: Path | None = None,
        workers: int = 2,
        config: dict[str, object] | None = None,
        config_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> RegistryProcess:
        server = RegistryProcess(
            data_dir or tmp_path / f"data{len(started)}",
            workers=workers,
            config=config,
            config_file=config_file,
            env=env,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the session; tests isolate themselves by key prefix."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; tests isolate themselves by database."""
    server = PostgresServer().start()
    yield server
    server.stop()
