"""Request parsing shared by the handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from aiohttp import web

from cargobay.auth.guard import ANONYMOUS, Guard, Identity
from cargobay.config import Config
from cargobay.errors import BodyTimeout, ManifestTooLarge, Unsupported
from cargobay.registry.names import check_name
from cargobay.registry.registry import Registry

REGISTRY_KEY = web.AppKey("registry", Registry)
GUARD_KEY: web.AppKey[Guard | None] = web.AppKey("guard")
CONFIG_KEY = web.AppKey("config", Config)
# Set when a graceful shutdown begins (server.py): /readyz answers 503 from then on.
SHUTTING_DOWN_KEY = web.AppKey("shutting_down", asyncio.Event)
IDENTITY_KEY = web.RequestKey("identity", Identity)

# How much of a request body the server takes from the socket buffer at once.
BODY_CHUNK = 1 << 20


def registry(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


def guard(request: web.Request) -> Guard | None:
    return request.app[GUARD_KEY]


def identity(request: web.Request) -> Identity:
    value: Identity = request.get(IDENTITY_KEY, ANONYMOUS)
    return value


def repository(request: web.Request) -> str:
    return check_name(request.match_info["name"])


def page_size(request: web.Request, *, default: int | None, maximum: int) -> int | None:
    """The `n` query parameter: a non-negative integer, capped at `maximum` (the Link header
    tells the client there is more)."""
    raw = request.query.get("n")
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise Unsupported(f"n must be a non-negative integer, not {raw!r}")
    if len(raw.lstrip("0")) > len(str(maximum)):  # int() refuses over 4,300 digits
        return maximum
    return min(int(raw), maximum)


def next_link(path: str, **params: str | int | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f'<{path}?{query}>; rel="next"'


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; BodyTimeout (408) when a period of the body idle
    timeout spent waiting for the client brings less than the minimum rate: nothing at all,
    or a slow-loris trickle. Time spent processing chunks (a slow store) is not counted."""
    settings = request.app[CONFIG_KEY].http
    period = settings.body_idle_timeout_seconds
    needed = max(1, settings.body_min_bytes_per_second * period)
    loop = asyncio.get_running_loop()
    waited, received = 0.0, 0
    while True:
        started = loop.time()
        chunk: bytes | None
        try:
            async with asyncio.timeout(max(0.0, period - waited)):
                chunk = await request.content.read(BODY_CHUNK)
        except TimeoutError:
            chunk = None
        waited += loop.time() - started
        if chunk == b"":
            return
        received += len(chunk or b"")
        if chunk is None or waited >= period:
            if received < needed:
                raise BodyTimeout(
                    f"request body too slow: {received} bytes in {period} s of waiting "
                    f"(at least {needed} required)"
                ) from None
            waited, received = 0.0, 0
        if chunk:
            yield chunk


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read a whole (small) body, refusing it with 413 as soon as it passes `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise ManifestTooLarge(f"body of {request.content_length} bytes exceeds {limit}")
    body = bytearray()
    async for chunk in body_chunks(request):
        body += chunk
        if len(body) > limit:
            raise ManifestTooLarge(f"body exceeds {limit} bytes")
    return bytes(body)
