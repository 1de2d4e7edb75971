"""Decide, per request, who is asking and whether they may: basic credentials against the
htpasswd users, then the access policy."""

from __future__ import annotations

import base64
import binascii
import math

from cargobay.auth.htpasswd import Htpasswd
from cargobay.auth.policy import AccessPolicy
from cargobay.auth.ratelimit import FailedLogins
from cargobay.errors import Denied, TooManyRequests, Unauthorized


class Guard:
    def __init__(
        self,
        users: Htpasswd,
        policy: AccessPolicy,
        realm: str,
        failed_logins: FailedLogins | None = None,
    ) -> None:
        self.users = users
        self.policy = policy
        self.realm = realm
        self.failed_logins = failed_logins or FailedLogins()

    @property
    def challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'}

    async def authenticate(self, authorization: str | None, client: str = "") -> str | None:
        """The user name, or None for an anonymous request; bad credentials are refused, and
        so is anyone who failed too often lately (429)."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("only basic authentication is supported", headers=self.challenge)
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic credentials", headers=self.challenge) from None
        if sep and not user and not password:
            # containers/image answers a Basic challenge with empty credentials when it has
            # none (`Basic Og==`): that is an anonymous request, not a failed login.
            return None
        keys = (f"client:{client}", f"user:{user}")
        wait = self.failed_logins.retry_after(*keys)
        if wait is not None:
            raise TooManyRequests(
                "too many failed logins; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if not sep or not await self.users.verify(user, password):
            self.failed_logins.record(*keys)
            raise Unauthorized("invalid username or password", headers=self.challenge)
        return user

    def require(self, user: str | None, repository: str | None, action: str) -> None:
        """Refuse unless `user` may do `action` on `repository` (None: the registry itself,
        which needs any signed-in user)."""
        allowed = (
            user is not None if repository is None else self.policy.allows(user, repository, action)
        )
        if allowed:
            return
        if user is None:
            raise Unauthorized(headers=self.challenge)
        raise Denied(
            f"{user} may not {action} {repository}",
            detail={"repository": repository, "action": action},
        )

    def may(self, user: str | None, repository: str, action: str) -> bool:
        return self.policy.allows(user, repository, action)
