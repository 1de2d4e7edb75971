"""The machine: what it is, and its ceilings (sha256 on one core, loopback TCP, disk writes)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20
_ctx = mp.get_context("fork")


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    distro = ""
    os_release = Path("/etc/os-release")
    if os_release.exists():
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_bytes": memory,
        "kernel": platform.release(),
        "os": distro,
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def sha256_mibs(total: int = 512 * MiB, chunk: int = MiB) -> float:
    """hashlib sha256 throughput on one core, fed 1 MiB at a time (as a server would); best of 3."""
    data = memoryview(os.urandom(chunk))
    best = 0.0
    for _ in range(3):
        h = hashlib.sha256()
        t = time.perf_counter()
        for _ in range(total // chunk):
            h.update(data)
        best = max(best, total / MiB / (time.perf_counter() - t))
    return best


def loopback_mibs(total: int = 4096 * MiB, chunk: int = MiB) -> float:
    """One TCP stream over 127.0.0.1 between two processes, 1 MiB sendall / recv_into."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    reader = _ctx.Process(target=_sink, args=(listener, chunk), daemon=True)
    reader.start()
    listener.close()
    data = memoryview(bytearray(os.urandom(chunk)))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        t = time.perf_counter()
        for _ in range(total // chunk):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = int(sock.recv(64))  # the reader answers once it has everything
        elapsed = time.perf_counter() - t
    reader.join(timeout=30)
    return received / MiB / elapsed


def _sink(listener: socket.socket, chunk: int) -> None:
    conn, _ = listener.accept()
    buf = memoryview(bytearray(chunk))
    total = 0
    while n := conn.recv_into(buf):
        total += n
    conn.sendall(str(total).encode())
    conn.close()


def disk_write_mibs(directory: Path, total: int = 512 * MiB, chunk: int = MiB) -> float:
    """Write `total` bytes in 1 MiB writes to a new file and fsync it; MiB/s including fsync."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench-disk-write.tmp"
    data = memoryview(os.urandom(chunk))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t = time.perf_counter()
        for _ in range(total // chunk):
            os.write(fd, data)
        os.fsync(fd)
        elapsed = time.perf_counter() - t
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return total / MiB / elapsed


def machine_limits(data_root: Path, quick: bool = False) -> dict[str, float]:
    scale = 4 if quick else 1
    return {
        "sha256_mib_s": sha256_mibs(512 * MiB // scale),
        "loopback_mib_s": loopback_mibs(4096 * MiB // scale),
        "disk_write_fsync_mib_s": disk_write_mibs(data_root, 512 * MiB if not quick else 256 * MiB),
    }
