"""Decide, per request, who is asking and whether they may: basic credentials against the
htpasswd users, then the access policy."""

from __future__ import annotations

import base64
import binascii

from cargobay.auth.htpasswd import Htpasswd
from cargobay.auth.policy import AccessPolicy
from cargobay.errors import Denied, Unauthorized


class Guard:
    def __init__(self, users: Htpasswd, policy: AccessPolicy, realm: str) -> None:
        self.users = users
        self.policy = policy
        self.realm = realm

    @property
    def challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'}

    async def authenticate(self, authorization: str | None) -> str | None:
        """The user name, or None for an anonymous request; bad credentials are refused."""
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
        if not sep or not await self.users.verify(user, password):
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
