"""Robot accounts: long-lived, revocable API tokens with their own scopes, usable as the
password in basic authentication (and so at the token endpoint).

A token reads `cbt_<id>_<secret>`. Only SHA-256 of the secret is stored: the secret is 32 random
bytes, so a fast hash is enough (unlike passwords, it cannot be guessed from a dictionary).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from cargobay.auth.policy import Rule
from cargobay.metadata.base import ApiTokenRecord, MetadataStore

PREFIX = "cbt_"
REFRESH_PREFIX = "cbr_"
ROBOT_PREFIX = "robot:"
_PREFIXES = {"robot": PREFIX, "refresh": REFRESH_PREFIX}


def new_token(
    name: str, scopes: tuple[tuple[str, tuple[str, ...]], ...], kind: str = "robot"
) -> tuple[str, ApiTokenRecord]:
    """The token to hand out once, and the record to store."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = ApiTokenRecord(
        id=token_id,
        name=name,
        secret_hash=hashlib.sha256(secret.encode()).digest(),
        scopes=scopes,
        created_at=time.time(),
        kind=kind,
    )
    return f"{_PREFIXES[kind]}{token_id}_{secret}", record


def rules_of(record: ApiTokenRecord) -> tuple[Rule, ...]:
    who = ROBOT_PREFIX + record.name
    return tuple(Rule((who,), (pattern,), actions) for pattern, actions in record.scopes)


class RobotTokens:
    def __init__(self, metadata: MetadataStore) -> None:
        self.metadata = metadata

    async def verify(self, presented: str, kind: str = "robot") -> ApiTokenRecord | None:
        """The token's record if `presented` is a valid, unrevoked token of `kind`."""
        prefix = _PREFIXES[kind]
        if not presented.startswith(prefix):
            return None
        token_id, sep, secret = presented[len(prefix) :].partition("_")
        if not sep:
            return None
        record = await self.metadata.get_api_token(token_id)
        digest = hashlib.sha256(secret.encode()).digest()
        if record is None or record.revoked_at is not None or record.kind != kind:
            return None
        return record if hmac.compare_digest(digest, record.secret_hash) else None
