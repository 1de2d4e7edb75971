from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import RegistryProcess

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """The path of an external tool; skip the test without it, or fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install-test-tools.sh installs it as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One registry (2 workers, embedded storage) shared by the whole session."""
    server = RegistryProcess(tmp_path_factory.mktemp("registry") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def client(registry_server: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
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
