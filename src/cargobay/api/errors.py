"""The one place where errors become HTTP responses: the spec's JSON error envelope."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from cargobay.errors import (
    BlobUploadInvalid,
    RegistryError,
    Unsupported,
)

log = logging.getLogger("cargobay.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: RegistryError) -> web.Response:
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return web.Response(
        status=error.status,
        body=json.dumps({"errors": [entry]}).encode(),
        headers={**error.headers, "Content-Type": "application/json"},
    )


def _from_http(exc: web.HTTPException, request: web.Request) -> RegistryError:
    """aiohttp raises these itself: no route, wrong method, a form body over the size limit."""
    if exc.status == 404:
        return Unsupported(f"no endpoint at {request.path!r}", status=404)
    if exc.status == 405:
        return Unsupported(f"{request.method} is not supported on {request.path!r}", status=405)
    return Unsupported(exc.reason, status=exc.status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(exc, request))
    except (ConnectionResetError, ClientPayloadError, HttpProcessingError) as exc:
        # The client went away or sent a broken body mid-request: its error, not ours. What
        # was received is discarded (an upload stays where it was).
        log.info("%s %s: request body incomplete: %s", request.method, request.path, exc)
        return error_response(BlobUploadInvalid("request body ended early or is malformed"))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.Response(
            status=500,
            body=b'{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}',
            content_type="application/json",
        )
