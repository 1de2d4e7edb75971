"""A registry with garbage collection on, on either setup, and ways to look behind it: whether a
blob's bytes are in the blob store, `cargobay gc` run against its configuration."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from obstore.store import S3Store

from tests.api.helpers import canonical, digest_of, get_blob
from tests.conftest import TLS_CONTEXT, scaleout_config
from tests.server import RegistryProcess


@dataclass
class GCSetup:
    server: RegistryProcess
    config: dict[str, Any]
    config_file: Path
    store: S3Store | None = None
    prefix: str = ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=60, verify=TLS_CONTEXT)

    def _key(self, digest: str) -> str:
        algorithm, encoded = digest.split(":")
        return f"{algorithm}/{encoded[:2]}/{encoded}"

    def stored(self, digest: str) -> bool:
        """Whether the blob store holds the bytes (whatever the metadata says)."""
        if self.store is None:
            return (self.server.data_dir / "blobs" / self._key(digest)).exists()
        import obstore

        try:
            obstore.head(self.store, f"{self.prefix}/blobs/{self._key(digest)}")
            return True
        except FileNotFoundError:
            return False

    def put_orphan(self, data: bytes) -> str:
        """Bytes in the blob store that the metadata does not know (as a crash leaves)."""
        digest = digest_of(data)
        if self.store is None:
            path = self.server.data_dir / "blobs" / self._key(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            import obstore

            key = f"{self.prefix}/blobs/{self._key(digest)}"
            obstore.put(self.store, key, data)
        return digest

    def gc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`cargobay gc` against this registry's data, as an operator runs it."""
        command = [sys.executable, "-m", "cargobay", "gc", "--config", str(self.config_file)]
        command += ["--data-dir", str(self.server.data_dir), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


def start_gc_setup(
    backend: str,
    root: Path,
    request: pytest.FixtureRequest,
    gc: dict[str, Any],
    **settings: Any,
) -> GCSetup:
    config: dict[str, Any] = {"gc": gc, **settings}
    store = None
    prefix = ""
    if backend != "embedded":
        seaweedfs = request.getfixturevalue("seaweedfs")
        postgres = request.getfixturevalue("postgres")
        prefix = f"gc{uuid.uuid4().hex[:8]}"
        config.update(scaleout_config(seaweedfs, postgres.create_database(prefix), prefix))
        store = seaweedfs.store()
    server = RegistryProcess(root / "data", workers=2, config=config).start()
    config_file = root / "data-config.yml"  # written by RegistryProcess
    assert config_file.exists()
    return GCSetup(server, config, config_file, store, prefix)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll a condition that the registry's collector makes true in its own time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


def pull_exact(client: httpx.Client, name: str, digest: str) -> None:
    """Pull a manifest by digest and everything it references, checking every digest."""
    r = client.get(
        f"/v2/{name}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json,"
                 "application/vnd.oci.image.manifest.v1+json"},
    )  # fmt: skip
    assert r.status_code == 200, (name, digest, r.status_code, r.text)
    assert digest_of(r.content) == digest
    document = json.loads(r.content)
    for child in document.get("manifests", []):
        pull_exact(client, name, child["digest"])
    for blob in [document.get("config"), *document.get("layers", [])]:
        if blob is None:
            continue
        _, data = get_blob(client, name, blob["digest"])
        assert hashlib.sha256(data).hexdigest() == blob["digest"].split(":")[1], (name, blob)


def index_of(children: list[tuple[bytes, str]]) -> bytes:
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": len(body),
                    "platform": {"os": "linux", "architecture": f"arch{i}"},
                }
                for i, (body, digest) in enumerate(children)
            ],
        }
    )
