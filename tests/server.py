"""Run real cargobay server processes on free loopback ports for tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml

_LISTENING = re.compile(r"listening on (https?://\S+)")


class RegistryProcess:
    """`cargobay serve` in a subprocess. The socket is listening once the first line is printed,
    so requests made after start() returns are queued by the kernel, never refused."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        config: dict[str, object] | None = None,
        config_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config_file = config_file
        self.workers = workers
        self.config = config
        self.env = env or {}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"

    @property
    def host(self) -> str:
        """host:port, as registry clients want it."""
        return self.url.split("://", 1)[1]

    def start(self) -> RegistryProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "cargobay", "serve",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--workers", str(self.workers),
        ]  # fmt: skip
        if self.config is not None:
            config_file = self.data_dir.parent / f"{self.data_dir.name}-config.yml"
            config_file.write_text(yaml.safe_dump(self.config))
            args += ["--config", str(config_file)]
        elif self.config_file is not None:
            args += ["--config", str(self.config_file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOBAY_")}
        env.update(self.env)
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            self.process.wait(timeout=10)
            raise RuntimeError(f"cargobay did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = match.group(1)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the supervisor and every worker at once: a crash, nothing gets to clean up."""
        if self.process is None:
            return
        # The supervisor is stopped first (so it can neither signal the workers nor fork new
        # ones), then everything is killed: a pure crash.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGSTOP)
        workers = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in workers.read_text().split()] if workers.exists() else []
        for pid in [*pids, self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
