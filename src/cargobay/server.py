"""Process model: bind the socket once, fork worker processes that each run an event loop.

Every worker accepts from the shared listening socket. Workers share no memory; all state is
in the metadata and blob stores, so any worker can serve any request, including the next chunk
of an upload another worker started. The parent only supervises: it restarts a worker that
dies and forwards SIGTERM/SIGINT for a graceful stop. Beside the workers it runs one
maintenance process for garbage collection, at a lower CPU priority (nice 10): on a busy
machine collecting waits for the CPU the workers do not need. (With one worker there is no
supervisor, and the worker collects itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import ssl
import sys
import time

from aiohttp import web

from cargobay import metrics
from cargobay.api.common import SHUTTING_DOWN_KEY
from cargobay.api.lifecycle import IN_FLIGHT_KEY
from cargobay.app import build_guard, build_metadata_store, create_app, run_maintenance
from cargobay.config import Config
from cargobay.errors import Unavailable
from cargobay.logs import AccessLogger
from cargobay.metrics import prepare_multiprocess_dir, serve_metrics, worker_exited

log = logging.getLogger("cargobay")

READ_BUFSIZE = 1 << 20
SHUTDOWN_TIMEOUT = 10.0
# A worker that dies sooner than this after starting will die again: stop instead of looping.
CRASH_LOOP_SECONDS = 5.0
PR_SET_PDEATHSIG = 1
STARTUP_WAIT_SECONDS = 30.0
# The maintenance process (garbage collection) yields the CPU to the workers serving requests.
MAINTENANCE_NICENESS = 10


# Request bodies arrive in buffers of up to 1 MiB; above glibc's default mmap threshold each one
# is mmapped and unmapped again, costing page faults on every chunk (2x slower uploads here).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864"


def serve(config: Config) -> None:
    _ensure_malloc_tunables()
    _migrate(config)
    sock = _bind(*config.host_port)
    host, port = sock.getsockname()[:2]
    workers = config.worker_count
    # A bad certificate, key or htpasswd file fails here, before any worker starts.
    _ssl_context(config)
    build_guard(config)
    scheme = "https" if config.tls.certificate else "http"
    print(
        f"cargobay listening on {scheme}://{_url_host(host)}:{port} ({workers} workers,"
        f" data in {config.data_dir})",
        flush=True,
    )
    stop_metrics = None
    if config.metrics_host_port is not None:
        prepare_multiprocess_dir()  # before any worker imports prometheus_client
        stop_metrics = serve_metrics(config.metrics_host_port)
    try:
        if workers == 1:
            _run_worker(config, sock)
        else:
            _supervise(config, sock, workers)
    finally:
        if stop_metrics is not None:
            stop_metrics()


def _migrate(config: Config) -> None:
    """Create or upgrade the schema; a database that is still starting (instances and the
    database started together) gets STARTUP_WAIT_SECONDS to come up."""
    deadline = time.monotonic() + STARTUP_WAIT_SECONDS
    while True:
        try:
            build_metadata_store(config).migrate()
            return
        except Unavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("%s; retrying", exc.message)
            time.sleep(1)


def _ensure_malloc_tunables() -> None:
    """glibc reads GLIBC_TUNABLES only at process start: re-execute once with them set."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _supervise(config: Config, sock: socket.socket, count: int) -> None:
    """Fork `count` workers, and a maintenance process (garbage collection) when gc is on;
    restart any of them that dies."""
    children: dict[int, tuple[float, str]] = {}  # pid -> (start time, "worker"/"maintenance")
    stopping = False
    parent = os.getpid()

    def spawn(kind: str = "worker") -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent(parent)
                if kind == "maintenance":
                    sock.close()  # it serves no requests
                    _run_maintenance(config)
                else:
                    _run_worker(config, sock, collect_garbage=False)
            except BaseException:
                log.exception("%s failed", kind)
                code = 1
            finally:
                os._exit(code)
        children[pid] = (time.monotonic(), kind)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    failed = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        spawn()
    if config.gc.enabled:
        spawn("maintenance")
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started, kind = children.pop(pid)
        worker_exited(pid)
        if stopping:
            continue
        if time.monotonic() - started < CRASH_LOOP_SECONDS:
            log.error("%s %d exited (status %d) right after start; stopping", kind, pid, status)
            stop(signal.SIGTERM, None)
            failed = True
            continue
        log.error("%s %d exited (status %d); starting another", kind, pid, status)
        spawn(kind)
    sys.exit(1 if failed else 0)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, even by SIGKILL, so that no
    orphaned worker keeps serving (and holding the port)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls.certificate or not config.tls.key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls.certificate, config.tls.key)
    return context


def _run_worker(config: Config, sock: socket.socket, *, collect_garbage: bool = True) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    asyncio.run(_serve_forever(config, sock, collect_garbage))


def _run_maintenance(config: Config) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.nice(MAINTENANCE_NICENESS)

    async def maintain() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await run_maintenance(config, stopped)

    asyncio.run(maintain())


async def _serve_forever(config: Config, sock: socket.socket, collect_garbage: bool) -> None:
    if not config.access_log:  # the access logger still runs when it records metrics
        logging.getLogger("cargobay.access").setLevel(logging.WARNING)
    app = create_app(config, collect_garbage=collect_garbage)
    runner = web.AppRunner(
        app,
        access_log=log.getChild("access") if config.access_log or metrics.current() else None,
        access_log_class=AccessLogger,
        read_bufsize=READ_BUFSIZE,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        # Also bounds how long a new connection may take to send its first request's
        # headers: aiohttp arms this timer when the connection opens (slow-loris).
        keepalive_timeout=config.http.idle_timeout_seconds,
    )
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=_ssl_context(config))
    await site.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    # Graceful: readiness off, no new connections, requests in flight finish (up to a
    # deadline), then close. See cargobay.api.lifecycle for why not runner.cleanup() alone.
    app[SHUTTING_DOWN_KEY].set()
    await site.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[IN_FLIGHT_KEY].wait_idle(), SHUTDOWN_TIMEOUT)
    await runner.cleanup()
