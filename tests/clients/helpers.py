"""Shared helpers for the real-client tests: running tools, OCI layouts, podman/buildah flags."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.server import RegistryProcess

OCI_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# Every manifest type, for GETs that must not trigger content negotiation.
ACCEPT_ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])

# Generous per-command timeout: every command here takes well under a few seconds.
TIMEOUT = 120


def run(
    args: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
    server: RegistryProcess | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stdout, stderr and the tail of the server log."""
    argv = [str(a) for a in args]
    full_env = {**os.environ, **env} if env is not None else None
    try:
        return subprocess.run(
            argv,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            input=input,
        )
    except subprocess.CalledProcessError as exc:
        problem = f"exited with status {exc.returncode}"
        stdout, stderr = exc.stdout, exc.stderr
    except subprocess.TimeoutExpired as exc:
        problem = f"timed out after {timeout} s"
        stdout, stderr = _text(exc.stdout), _text(exc.stderr)
    message = f"{shlex.join(argv)}\n{problem}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    if server is not None:
        message += f"\n--- server log (tail) ---\n{log_tail(server)}"
    raise AssertionError(message)


def run_status(
    args: Sequence[str | Path], *, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to fail; the caller checks its status and stderr."""
    full_env = {**os.environ, **env} if env is not None else None
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def log_tail(server: RegistryProcess, lines: int = 60) -> str:
    return "\n".join(server.log().splitlines()[-lines:])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def tar_gz(files: Mapping[str, bytes]) -> tuple[bytes, bytes]:
    """A reproducible gzipped tar of `files` (path -> content): (compressed, uncompressed)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), uncompressed


class OciLayout:
    """A hand-written OCI image layout (oci-layout, index.json, blobs/sha256/...)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps(OCI_LAYOUT_VERSION))
        self.refs: list[dict[str, Any]] = []
        self._write_index()

    def add_blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_image(
        self,
        files: Mapping[str, bytes],
        *,
        architecture: str = "amd64",
        os_name: str = "linux",
        variant: str | None = None,
    ) -> dict[str, Any]:
        """Config + one layer + manifest; returns the manifest's descriptor with its platform."""
        compressed, uncompressed = tar_gz(files)
        layer = self.add_blob(compressed, OCI_LAYER_GZIP)
        platform: dict[str, str] = {"architecture": architecture, "os": os_name}
        if variant:
            platform["variant"] = variant
        config = {
            **platform,
            "config": {"Cmd": ["/" + sorted(files)[0].lstrip("/")]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(uncompressed)]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.add_blob(canonical_json(config), OCI_CONFIG),
            "layers": [layer],
        }
        descriptor = self.add_blob(canonical_json(manifest), OCI_MANIFEST)
        return {**descriptor, "platform": platform}

    def add_index(self, manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(manifests)}
        return self.add_blob(canonical_json(index), OCI_INDEX)

    def tag(self, descriptor: dict[str, Any], ref: str) -> None:
        entry = {k: v for k, v in descriptor.items() if k in ("mediaType", "digest", "size")}
        self.refs.append({**entry, "annotations": {REF_NAME: ref}})
        self._write_index()

    def _write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.root / "index.json").write_text(json.dumps(index))


def layout_ref(layout: Path, ref: str) -> dict[str, Any]:
    """The descriptor index.json of an OCI layout has for `ref`."""
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get(REF_NAME) == ref:
            return dict(descriptor)
    raise AssertionError(f"{layout} has no reference {ref!r}: {index}")


def layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hex_digest = digest.partition(":")
    return (layout / "blobs" / algorithm / hex_digest).read_bytes()


def umoci_image(workdir: Path, ref: str, files: Mapping[str, bytes]) -> Path:
    """An OCI layout at workdir/layout made by umoci, holding `files` under reference `ref`."""
    umoci = "umoci"
    layout = workdir / "layout"
    content = workdir / "content"
    content.mkdir(parents=True)
    run([umoci, "init", "--layout", layout])
    run([umoci, "new", "--image", f"{layout}:{ref}"])
    for name, data in files.items():
        source = content / name.lstrip("/").replace("/", "_")
        source.write_bytes(data)
        run([umoci, "insert", "--image", f"{layout}:{ref}", source, "/" + name.lstrip("/")])
    first = "/" + sorted(files)[0].lstrip("/")
    run([umoci, "config", "--image", f"{layout}:{ref}", "--config.cmd", first])
    return layout


# -- podman / buildah ------------------------------------------------------------------------


def short_runroot() -> Path:
    """A fresh directory with a short path: podman refuses a runroot longer than 50 characters,
    which pytest's tmp_path usually is. The caller removes it."""
    return Path(tempfile.mkdtemp(prefix="cargobay-", dir="/tmp"))


def storage_flags(workdir: Path, runroot: Path) -> list[str]:
    return [
        "--storage-driver", "vfs",
        "--root", str(workdir / "root"),
        "--runroot", str(runroot),
    ]  # fmt: skip


def podman_cmd(workdir: Path, runroot: Path) -> list[str]:
    """podman with its own rootful vfs storage under workdir."""
    return [
        "podman", *storage_flags(workdir, runroot),
        "--events-backend", "file",
        "--cgroup-manager", "cgroupfs",
        "--tmpdir", str(workdir / "tmp"),
    ]  # fmt: skip


def buildah_cmd(workdir: Path, runroot: Path) -> list[str]:
    return ["buildah", *storage_flags(workdir, runroot)]


def containers_env(workdir: Path, host: str) -> dict[str, str]:
    """Environment for podman/buildah: a registries.conf marking `host` insecure (for commands
    with no TLS flag) and a private auth file."""
    conf = workdir / "registries.conf"
    conf.write_text(
        "unqualified-search-registries = []\n\n"
        f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
    )
    auth = workdir / "auth.json"
    auth.write_text('{"auths": {}}')
    return {
        "CONTAINERS_REGISTRIES_CONF": str(conf),
        "REGISTRY_AUTH_FILE": str(auth),
    }
