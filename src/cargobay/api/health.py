"""Health endpoints for load balancers and orchestrators (outside /v2/, never authenticated).

/healthz: the process is alive and serving. /readyz: it can do its job, meaning the metadata
store and the blob store answer; it turns 503 as soon as a graceful shutdown begins, so that
the load balancer stops sending requests while the in-flight ones finish.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from cargobay.api.common import SHUTTING_DOWN_KEY, registry
from cargobay.errors import Unavailable

CHECK_TIMEOUT = 5.0


async def healthz(request: web.Request) -> web.StreamResponse:
    return _json(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    if request.app[SHUTTING_DOWN_KEY].is_set():
        return _json(503, {"status": "shutting down"})
    stores = registry(request)
    checks = {"metadata": stores.metadata.ping(), "storage": stores.blobs.ping()}
    results = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT)
            results[name] = "ok"
        except Unavailable as exc:
            results[name] = exc.message
        except TimeoutError:
            results[name] = f"no answer within {CHECK_TIMEOUT:g} s"
    ready = all(result == "ok" for result in results.values())
    return _json(200 if ready else 503, {"status": "ok" if ready else "unavailable", **results})


def _json(status: int, body: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
