"""Start, measure and stop the two registries under test.

Both run on loopback with empty data directories (or, with `--backend s3`, on an empty prefix of
one SeaweedFS bucket, cargobay with its metadata in an empty PostgreSQL database: bench/backing.py).
Only processes started here are ever signalled, by PID. Resource accounting reads /proc for the
server process and all its descendants.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.http import Connection

if TYPE_CHECKING:
    from bench.backing import ScaleOut

_LISTENING = re.compile(r"listening on http://([^:/\s]+):(\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Server:
    """A registry process tree. Subclasses implement start(), blob_file() and blob_key()."""

    label = ""
    name = ""

    def __init__(self, data_dir: Path, backing: ScaleOut | None = None) -> None:
        self.data_dir = data_dir
        self.backing = backing  # S3 (+ PostgreSQL) services; None: blobs in data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.version = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        raise NotImplementedError

    def blob_file(self, digest: str) -> Path:
        """Where the bytes of a committed blob live on disk."""
        raise NotImplementedError

    def blob_key(self, digest: str) -> str:
        """Where the bytes of a committed blob live in the bucket (with a backing S3 store)."""
        raise NotImplementedError

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- /proc accounting ----------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        return process_tree(self.pid)

    def cpu_by_pid(self) -> dict[int, float]:
        """utime + stime (plus waited-for children's) of each process in the tree, seconds."""
        return cpu_by_pid(self.pids())

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_pid().values())

    def reset_peak_rss(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        """Sum of VmHWM over the tree, in bytes."""
        return sum(status_kib(pid, "VmHWM") for pid in self.pids()) * 1024

    def rss(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in self.pids()) * 1024


class Cargobay(Server):
    """cargobay on `data_dir`, logging at warning level. `config`: more settings for its config
    file (e.g. {"gc": {...}}), merged over those of the backing services; a "log_level" there
    replaces warning."""

    label = "cargobay"
    name = "cargobay"

    def __init__(
        self,
        data_dir: Path,
        workers: int = 2,
        backing: ScaleOut | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data_dir, backing)
        self.workers = workers
        self.extra_config = config or {}
        if backing is not None:
            self.label = "cargobay (S3 + PostgreSQL)"

    @property
    def config(self) -> dict[str, Any]:
        """The settings of its config file (empty: it gets none)."""
        services = self.backing.cargobay_config() if self.backing is not None else {}
        return merge_settings(services, self.extra_config)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOBAY_")}
        settings = self.config
        args = [
            sys.executable, "-m", "cargobay", "serve",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--workers", str(self.workers),
            "--log-level", str(settings.get("log_level", "warning")),
        ]  # fmt: skip
        if settings:
            config = self.data_dir.parent / f"{self.data_dir.name}-config.yml"
            config.write_text(json.dumps(settings, indent=1))  # JSON is YAML
            args += ["--config", str(config)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode(errors="replace")
        match = _LISTENING.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"cargobay did not start: {line!r}\n{self.log_tail()}")
        self.host, self.port = match.group(1), int(match.group(2))
        wait_ready(self.host, self.port)
        self.version = _cargobay_version()

    def blob_file(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.data_dir / "blobs" / algorithm / encoded[:2] / encoded

    def blob_key(self, digest: str) -> str:
        assert self.backing is not None
        algorithm, encoded = digest.split(":", 1)
        return f"{self.backing.cargobay_prefix}/blobs/{algorithm}/{encoded[:2]}/{encoded}"


class Distribution(Server):
    label = "distribution"
    name = "distribution"
    binary = "/usr/bin/docker-registry"

    def __init__(self, data_dir: Path, backing: ScaleOut | None = None) -> None:
        super().__init__(data_dir, backing)
        if backing is not None:
            self.label = "distribution (S3)"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.data_dir.parent / f"{self.data_dir.name}-config.yml"
        if self.backing is None:
            storage = f"  filesystem: {{rootdirectory: '{self.data_dir}'}}\n"
        else:  # its S3 driver; a JSON object is a YAML flow mapping
            storage = (
                f"  s3: {json.dumps(self.backing.distribution_s3())}\n"
                # 2.8's upload purger panics walking an S3 bucket (index out of range in
                # getOutstandingUploads, distribution/distribution#4590 and #4713, fixed in
                # v3 only) a few minutes after start, and the registry exits.
                "  maintenance: {uploadpurging: {enabled: false}}\n"
            )
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            "storage:\n"
            f"{storage}"
            "  delete: {enabled: true}\n"
            f"http: {{addr: '127.0.0.1:{self.port}'}}\n"
        )
        # Without AWS_* variables: its S3 driver (aws-sdk-go v1) refuses to start when
        # AWS_CA_BUNDLE is set ("LoadCustomCABundleError ... unsupported transport"), and the
        # credentials are in the config anyway.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:
            wait_ready(self.host, self.port, process=self.process)
        except RuntimeError:
            self.stop()
            raise
        self.version = distribution_version(self.binary)

    def blob_file(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.data_dir / "docker/registry/v2/blobs" / algorithm / encoded[:2] / encoded

    def blob_key(self, digest: str) -> str:
        assert self.backing is not None
        algorithm, encoded = digest.split(":", 1)
        root = self.backing.distribution_root
        return f"{root}/docker/registry/v2/blobs/{algorithm}/{encoded[:2]}/{encoded}/data"


def merge_settings(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s settings over it, section by section (nested dicts merge)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def wait_ready(
    host: str, port: int, *, process: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    """Poll GET /v2/ until it answers 200."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with Connection(host, port, timeout=5) as conn:
                if conn.request("GET", "/v2/").status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} not ready after {timeout}s ({last})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def distribution_version(binary: str = Distribution.binary) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip().split(" ", 1)[-1] or "unknown"


def _cargobay_version() -> str:
    import cargobay

    version = cargobay.__version__
    root = Path(cargobay.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{version} ({commit})" if commit else version


def process_tree(root: int) -> list[int]:
    """A process and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = int(stat[1])
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """utime + stime (plus waited-for children's) of each process, seconds."""
    times = {}
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None:  # fields after "(comm)": utime=11, stime=12, cutime, cstime
            times[pid] = sum(int(x) for x in stat[11:15]) / _CLK_TCK
    return times


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def forget_blobs(server: Server, digests: Iterable[str]) -> None:
    """Delete pushed blob files (or objects, with a backing S3 store) behind the server's back
    to bound disk use: their content is unique and never read again. Then flush writeback so
    the next run starts on a quiet disk."""
    if server.backing is not None:
        server.backing.delete([server.blob_key(digest) for digest in digests])
    else:
        for digest in digests:
            path = server.blob_file(digest)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    os.sync()
