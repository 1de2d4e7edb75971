"""Decide, per request, who is asking and whether they may.

Two ways in: basic credentials (checked against the htpasswd users; the access policy decides),
and, with token authentication on, bearer tokens from the token server (the token's `access`
claim decides). The token server itself grants the intersection of what is asked and what the
policy allows.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

from cargobay.auth.htpasswd import Htpasswd
from cargobay.auth.policy import AccessPolicy, Rule
from cargobay.auth.ratelimit import FailedLogins
from cargobay.auth.robots import PREFIX as ROBOT_TOKEN_PREFIX
from cargobay.auth.robots import ROBOT_PREFIX, RobotTokens, rules_of
from cargobay.auth.scope import REPOSITORY_ACTIONS, Scope
from cargobay.auth.tokens import TokenClaims, TokenInvalid, TokenSigner, TokenVerifier
from cargobay.errors import Denied, TooManyRequests, Unauthorized

# What a request needs: (resource type, resource name, action). The base endpoint `/v2/` needs
# only a valid identity; the catalog needs `registry:catalog:*`.
BASE = ("base", "", "")
CATALOG = ("registry", "catalog", "*")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None  # None: anonymous; robot accounts are "robot:<name>"
    token: TokenClaims | None = None  # set when the request carried a bearer token
    rules: tuple[Rule, ...] | None = None  # a robot's own scopes, instead of the policy


ANONYMOUS = Identity(None)


@dataclass(frozen=True, slots=True)
class TokenService:
    signer: TokenSigner | None  # None: tokens come from an external token server only
    verifier: TokenVerifier
    service: str
    realm: str | None  # the token endpoint's public URL; None: this server's /auth/token


class Guard:
    def __init__(
        self,
        users: Htpasswd,
        policy: AccessPolicy,
        realm: str,
        failed_logins: FailedLogins | None = None,
        tokens: TokenService | None = None,
        robots: RobotTokens | None = None,
    ) -> None:
        self.users = users
        self.policy = policy
        self.realm = realm
        self.failed_logins = failed_logins or FailedLogins()
        self.tokens = tokens
        self.robots = robots

    def challenge(self, need: tuple[str, str, str] = BASE, base_url: str = "") -> dict[str, str]:
        if self.tokens is None:
            return {"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'}
        realm = self.tokens.realm or f"{base_url}/auth/token"
        value = f'Bearer realm="{realm}",service="{self.tokens.service}"'
        kind, name, action = need
        if kind != "base":
            # Docker clients ask for pull along with push, as distribution challenges.
            actions = "pull,push" if action == "push" else action
            value += f',scope="{kind}:{name}:{actions}"'
        return {"WWW-Authenticate": value}

    async def authenticate(
        self, authorization: str | None, client: str = "", base_url: str = ""
    ) -> Identity:
        """Who is asking; bad credentials are refused, and so is anyone who failed too often
        lately (429)."""
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.tokens is not None:
            try:
                claims = self.tokens.verifier.verify(value.strip())
            except TokenInvalid as exc:
                raise Unauthorized(
                    f"invalid token: {exc}", headers=self.challenge(base_url=base_url)
                ) from None
            return Identity(claims.subject, claims)
        if scheme.lower() != "basic":
            raise Unauthorized(
                f"unsupported authorization scheme {scheme!r}",
                headers=self.challenge(base_url=base_url),
            )
        return await self.basic_identity(value, client, base_url)

    async def basic_identity(self, value: str, client: str, base_url: str = "") -> Identity:
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized(
                "malformed basic credentials", headers=self.challenge(base_url=base_url)
            ) from None
        if sep and not user and not password:
            # containers/image answers a Basic challenge with empty credentials when it has
            # none (`Basic Og==`): that is an anonymous request, not a failed login.
            return ANONYMOUS
        keys = (f"client:{client}", f"user:{user}")
        wait = self.failed_logins.retry_after(*keys)
        if wait is not None:
            raise TooManyRequests(
                "too many failed logins; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if sep and self.robots is not None and password.startswith(ROBOT_TOKEN_PREFIX):
            robot = await self.robots.verify(password)
            if robot is not None:
                return Identity(ROBOT_PREFIX + robot.name, rules=rules_of(robot))
        elif sep and await self.users.verify(user, password):
            return Identity(user)
        self.failed_logins.record(*keys)
        raise Unauthorized(
            "invalid username or password", headers=self.challenge(base_url=base_url)
        )

    def may(self, identity: Identity, kind: str, name: str, action: str) -> bool:
        if kind == "base":
            return identity.user is not None or identity.token is not None
        if identity.token is not None:
            return identity.token.allows(kind, name, action)
        if kind == "registry":
            return identity.user is not None and identity.rules is None
        if identity.rules is not None:
            return any(rule.grants(identity.user, name, action) for rule in identity.rules)
        return self.policy.allows(identity.user, name, action)

    def require(self, identity: Identity, need: tuple[str, str, str], base_url: str = "") -> None:
        if self.may(identity, *need):
            return
        if identity.user is None or identity.token is not None:
            # Anonymous, or a token without this access: send the client for (another) token.
            raise Unauthorized(headers=self.challenge(need, base_url))
        kind, name, action = need
        raise Denied(
            f"{identity.user} may not {action} {name}",
            detail={"type": kind, "name": name, "action": action},
        )

    def grant(self, identity: Identity, requested: list[Scope]) -> list[Scope]:
        """The token server's answer: of each requested scope, the actions the policy allows
        (never an error for less than was asked)."""
        granted = []
        for scope in requested:
            if scope.type == "repository":
                wanted = REPOSITORY_ACTIONS if "*" in scope.actions else scope.actions
                actions = tuple(
                    a
                    for a in dict.fromkeys(wanted)
                    if self.may(identity, "repository", scope.name, a)
                )
            elif (scope.type, scope.name) == ("registry", "catalog") and self.may(
                identity, "registry", "catalog", "*"
            ):
                actions = tuple(a for a in scope.actions if a == "*")
            else:
                actions = ()
            granted.append(Scope(scope.type, scope.name, actions))
        return granted
