"""A throwaway PostgreSQL server: initdb into a temporary folder, listen on a free loopback port.

stop() keeps the data and the port, so start() again brings the same server back (outage
tests). The folder is removed by cleanup(), which also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest


def _bin_dir() -> pathlib.Path:
    """The newest Debian-packaged PostgreSQL, else whatever initdb is on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(pathlib.Path(p).parts[-3]),
    )
    initdb = found[-1] if found else shutil.which("initdb")
    return pathlib.Path(initdb or "/usr/lib/postgresql/15/bin/initdb").parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    host: str = "127.0.0.1"
    port: int = 0

    def __init__(self, workdir: pathlib.Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="cargobay-pg-", dir="/tmp"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.bin = _bin_dir()
        self.running = False
        atexit.register(self.cleanup)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server program; initdb and postgres refuse to run as root."""
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def _initdb(self) -> None:
        if not (self.bin / "initdb").exists():
            message = "PostgreSQL is not installed (scripts/install-test-tools.sh installs it)"
            # As tests/conftest.py's require_tool (which imports this module).
            if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
                pytest.fail(message)
            pytest.skip(message)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # the postgres user must reach the data folder
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        result = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
            "--encoding=UTF8", "--no-locale", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")
        self.port = _free_port()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/services/postgres.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.data}'\n"
                # Several registry processes x workers x pool connect at once in API tests.
                "max_connections = 300\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )

    def start(self) -> PostgresServer:
        if self.running:
            return self
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start on port {self.port}:\n{result.stdout}{result.stderr}"
                f"\n--- {self.log} (tail) ---\n{self._log_tail()}"
            )
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
            self.running = False

    def cleanup(self) -> None:
        """Stop the server and remove its folder (if this object created it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql (as the superuser); returns unaligned output."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(database), "-c", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {sql}\n{result.stderr}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (tests isolate themselves by database); returns its DSN."""
        name = name or f"test_{uuid.uuid4().hex}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
