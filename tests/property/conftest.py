"""Hypothesis settings for the property tests, and the check that hostile requests create
nothing outside the registry's data directory.

Profiles: "ci" (chosen when CI is set) is derandomized, so a CI run is repeatable and bounded;
"dev" explores new examples on every run; "hunt" also skips the @example cases. Pick one with
HYPOTHESIS_PROFILE=dev|ci|hunt, and multiply every test's number of examples with PROPERTY_SCALE
(e.g. HYPOTHESIS_PROFILE=hunt PROPERTY_SCALE=20 for a long search). A failure prints its
`@reproduce_failure` blob. Hypothesis keeps its files in the system temp directory, not in the
repository.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.conftest import IN_CI
from tests.property.checks import RawClient
from tests.server import RegistryProcess

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cargobay-hypothesis")

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", print_blob=True, deadline=None)
# Skips the @example cases: known failures there would stop a test before it explores.
settings.register_profile(
    "hunt", phases=[Phase.generate, Phase.target, Phase.shrink], print_blob=True, deadline=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev"))

# What the registry itself keeps at the top of its data directory, and under blobs/.
_DATA_ENTRIES = ("metadata.db", "blobs", "uploads", "upload-locks", "blob-locks")
_ALGORITHMS = {"sha256", "sha512"}
_HEX = frozenset("0123456789abcdef")


def _tree(root: Path, skip: Path) -> set[str]:
    """Every path under `root` (relative to it), without the `skip` subtree."""
    found = set()
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        dirs[:] = [d for d in dirs if here / d != skip]
        for entry in [*dirs, *files]:
            path = here / entry
            if path != skip:
                found.add(str(path.relative_to(root)))
    return found


def _snapshot(data_dir: Path) -> tuple[set[str], set[str]]:
    """The server's own folder (data dir excluded, recursively) and the folder above it."""
    return _tree(data_dir.parent, data_dir), {p.name for p in data_dir.parent.parent.iterdir()}


def assert_data_dir_is_tidy(data_dir: Path) -> None:
    """The data directory holds only the registry's own entries: uploads/ and upload-locks/
    only files named by upload UUIDs, blobs/ only `<algorithm>/<2 hex>/<hex digest>` files."""
    for entry in data_dir.iterdir():
        assert entry.name.startswith(_DATA_ENTRIES), entry
    for folder in ("uploads", "upload-locks"):
        for entry in (data_dir / folder).iterdir() if (data_dir / folder).exists() else ():
            assert str(uuid.UUID(entry.name)) == entry.name, entry
    blobs = data_dir / "blobs"
    if not blobs.exists():
        return
    for path in blobs.rglob("*"):
        parts = path.relative_to(blobs).parts
        assert parts[0] in _ALGORITHMS, path
        if len(parts) >= 2:
            assert len(parts[1]) == 2 and set(parts[1]) <= _HEX, path
        if len(parts) == 3:
            assert parts[2].startswith(parts[1]) and set(parts[2]) <= _HEX, path
        assert len(parts) <= 3, path


@pytest.fixture
def confined(registry_server: RegistryProcess) -> Iterator[None]:
    """Fails the test if it left anything new outside the registry's data directory, or
    anything in it that is not the registry's own."""
    data_dir = registry_server.data_dir.resolve()
    before = _snapshot(data_dir)
    yield
    after = _snapshot(data_dir)
    assert after[0] <= before[0], f"created next to the data dir: {after[0] - before[0]}"
    assert after[1] <= before[1], f"created above the data dir: {after[1] - before[1]}"
    assert_data_dir_is_tidy(data_dir)


@pytest.fixture
def raw(registry_server: RegistryProcess) -> RawClient:
    """Requests with the target sent exactly as written (see checks.RawClient)."""
    return RawClient(registry_server.host)
