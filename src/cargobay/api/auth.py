"""The authentication middleware: every request is checked before its handler runs."""

from __future__ import annotations

from aiohttp import web

from cargobay.api.common import GUARD_KEY, USER_KEY
from cargobay.api.errors import Handler

_PUSH_METHODS = frozenset({"POST", "PATCH", "PUT"})


def required_action(request: web.Request) -> str:
    if "upload_id" in request.match_info:
        return "push"  # status and cancel of an upload belong to the pusher
    if request.method == "DELETE":
        return "delete"
    return "push" if request.method in _PUSH_METHODS else "pull"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD_KEY]
    if guard is None or request.match_info.http_exception is not None:
        return await handler(request)
    user = await guard.authenticate(request.headers.get("Authorization"), request.remote or "")
    guard.require(user, request.match_info.get("name"), required_action(request))
    request[USER_KEY] = user
    return await handler(request)
