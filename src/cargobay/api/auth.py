"""The authentication middleware (every request is checked before its handler runs) and the
built-in token server endpoints."""

from __future__ import annotations

import base64
import datetime
import json

from aiohttp import web

from cargobay.api.common import GUARD_KEY, IDENTITY_KEY
from cargobay.api.errors import Handler
from cargobay.auth.guard import ANONYMOUS, BASE, CATALOG, Guard, Identity
from cargobay.auth.robots import new_token
from cargobay.auth.scope import parse_scopes
from cargobay.errors import Unauthorized, Unsupported

_PUSH_METHODS = frozenset({"POST", "PATCH", "PUT"})


def required_access(request: web.Request) -> tuple[str, str, str]:
    name = request.match_info.get("name")
    if name is None:
        return CATALOG if request.path.rstrip("/") == "/v2/_catalog" else BASE
    if "upload_id" in request.match_info:
        action = "push"  # status and cancel of an upload belong to the pusher
    elif request.method == "DELETE":
        action = "delete"
    else:
        action = "push" if request.method in _PUSH_METHODS else "pull"
    return ("repository", name, action)


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD_KEY]
    if (
        guard is None
        or request.match_info.http_exception is not None
        or not request.path.startswith("/v2/")
    ):
        return await handler(request)
    here = base_url(request)
    identity = await guard.authenticate(
        request.headers.get("Authorization"), request.remote or "", here
    )
    guard.require(identity, required_access(request), here)
    request[IDENTITY_KEY] = identity
    return await handler(request)


def _token_guard(request: web.Request) -> Guard:
    guard = request.app[GUARD_KEY]
    if guard is None or guard.tokens is None or guard.tokens.signer is None:
        raise Unsupported("this registry runs no token server", status=404)
    return guard


async def issue_token(request: web.Request) -> web.StreamResponse:
    """GET /auth/token (basic credentials or anonymous; `offline_token=true` adds a refresh
    token) and POST /auth/token (OAuth2 `password` and `refresh_token` grants), as Docker's
    token authentication specification describes."""
    guard = _token_guard(request)
    assert guard.tokens is not None and guard.tokens.signer is not None
    client = request.remote or ""
    if request.method == "POST":
        form = await request.post()
        grant_type = form.get("grant_type")
        if grant_type == "password":
            credentials = f"{form.get('username', '')}:{form.get('password', '')}".encode()
            who = await guard.basic_identity(base64.b64encode(credentials).decode(), client)
        elif grant_type == "refresh_token":
            who = await _refreshed_identity(guard, str(form.get("refresh_token", "")))
        else:
            raise Unsupported("grant_type must be password or refresh_token")
        offline = grant_type == "password" and form.get("access_type") == "offline"
        service = str(form.get("service", ""))
        scopes = parse_scopes([str(s) for s in form.getall("scope", [])])
    else:
        who = ANONYMOUS
        authorization = request.headers.get("Authorization")
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise Unauthorized("the token endpoint takes basic credentials")
            who = await guard.basic_identity(value, client)
        offline = request.query.get("offline_token", "").lower() == "true"
        service = request.query.get("service", "")
        scopes = parse_scopes(request.query.getall("scope", []))
    if service and service != guard.tokens.service:
        raise Unsupported(f"unknown service {service!r}")
    granted = guard.grant(who, scopes)
    token, lifetime, issued = guard.tokens.signer.issue(who.user, guard.tokens.service, granted)
    issued_at = datetime.datetime.fromtimestamp(issued, datetime.UTC)
    body = {
        "token": token,
        "access_token": token,
        "expires_in": lifetime,
        "issued_at": issued_at.isoformat().replace("+00:00", "Z"),
    }
    if offline and who.user is not None and who.rules is None and guard.robots is not None:
        # Refresh tokens are for people; a robot's token already is long-lived.
        refresh, record = new_token(who.user, (), kind="refresh")
        await guard.robots.metadata.create_api_token(record)
        body["refresh_token"] = refresh
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def _refreshed_identity(guard: Guard, presented: str) -> Identity:
    record = await guard.robots.verify(presented, kind="refresh") if guard.robots else None
    if record is None or not guard.users.has_user(record.name):
        raise Unauthorized("invalid or revoked refresh token")
    return Identity(record.name)


async def jwks(request: web.Request) -> web.StreamResponse:
    guard = _token_guard(request)
    assert guard.tokens is not None and guard.tokens.signer is not None
    body = json.dumps(guard.tokens.signer.jwks()).encode()
    return web.Response(body=body, content_type="application/json")
