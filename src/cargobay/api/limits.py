"""Optional request-rate limits per client address and per signed-in user (rate_limit)."""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.typedefs import Middleware

from cargobay.api.common import identity
from cargobay.api.errors import Handler
from cargobay.auth.ratelimit import RequestRate
from cargobay.config import RateLimitConfig
from cargobay.errors import TooManyRequests


def rate_limit_middleware(config: RateLimitConfig) -> Middleware | None:
    """A middleware enforcing `config` (runs after authentication, so it knows the user);
    None when no limit is set."""
    per_client = RequestRate(config.per_client, config.burst) if config.per_client else None
    per_user = RequestRate(config.per_user, config.burst) if config.per_user else None
    if per_client is None and per_user is None:
        return None

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v2/"):
            waits = []
            if per_client is not None:
                waits.append(per_client.take(request.remote or ""))
            user = identity(request).user
            if per_user is not None and user is not None:
                waits.append(per_user.take(user))
            wait = max((w for w in waits if w is not None), default=None)
            if wait is not None:
                raise TooManyRequests(
                    "request rate limit exceeded", headers={"Retry-After": str(math.ceil(wait))}
                )
        return await handler(request)

    return limit
