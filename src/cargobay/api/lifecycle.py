"""Lifecycle: graceful shutdown (count requests in flight, tell clients to go elsewhere) and
read-only maintenance mode.

aiohttp's own shutdown stops reading from connections at once, so a request whose body is
still arriving (an upload chunk) could never finish. The server (server.py) therefore first
stops accepting connections and waits here until the requests in flight are done, and only then
closes everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from cargobay import metrics
from cargobay.api.common import REGISTRY_KEY, SHUTTING_DOWN_KEY
from cargobay.api.errors import error_response
from cargobay.errors import Unsupported

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestsInFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self.count += 1
        self._idle.clear()

    def finished(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


IN_FLIGHT_KEY = web.AppKey("in_flight", RequestsInFlight)
READ_ONLY = Unsupported(
    "the registry is in read-only mode for maintenance: pulls work, pushes and deletes do not",
    status=405,
)


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def lifecycle_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.method in WRITES
        and request.path.startswith("/v2/")
        and request.app[REGISTRY_KEY].config.read_only
    ):
        return error_response(READ_ONLY)
    in_flight = request.app[IN_FLIGHT_KEY]
    in_flight.started()
    recorder = metrics.current()
    uploading = recorder is not None and "/blobs/uploads/" in request.path
    if uploading:
        assert recorder is not None
        recorder.uploads_in_progress.inc()
    try:
        response = await handler(request)
    finally:
        in_flight.finished()
        if uploading:
            assert recorder is not None
            recorder.uploads_in_progress.dec()
    if request.app[SHUTTING_DOWN_KEY].is_set():
        response.force_close()  # a keep-alive client reconnects, to another instance
    return response
