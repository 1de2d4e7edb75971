"""Graceful shutdown support: count requests in flight and tell clients to go elsewhere.

aiohttp's own shutdown stops reading from connections at once, so a request whose body is
still arriving (an upload chunk) could never finish. The server (server.py) therefore first
stops accepting connections and waits here until the requests in flight are done, and only then
closes everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from cargobay.api.common import SHUTTING_DOWN_KEY

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


@web.middleware
async def lifecycle_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_flight = request.app[IN_FLIGHT_KEY]
    in_flight.started()
    try:
        response = await handler(request)
    finally:
        in_flight.finished()
    if request.app[SHUTTING_DOWN_KEY].is_set():
        response.force_close()  # a keep-alive client reconnects, to another instance
    return response
