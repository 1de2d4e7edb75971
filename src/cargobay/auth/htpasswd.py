"""Users from an Apache htpasswd file (bcrypt only), reloaded when the file changes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from pathlib import Path

import bcrypt

log = logging.getLogger("cargobay.auth")

BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
# bcrypt costs ~70 ms per check at cost 10: remember a verified password for a while (as a
# keyed digest, never the password) so that every request of a push does not pay it.
VERIFIED_TTL = 300.0
STAT_INTERVAL = 1.0


class HtpasswdError(Exception):
    pass


def parse_htpasswd(text: str, source: str) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise HtpasswdError(f"{source}:{number}: expected USER:HASH")
        encoded = hashed.encode()
        if not encoded.startswith(BCRYPT_PREFIXES):
            raise HtpasswdError(
                f"{source}:{number}: user {user!r} does not have a bcrypt hash; only bcrypt is"
                " accepted (create entries with `htpasswd -B` or `cargobay user add`)"
            )
        users[user] = encoded
    return users


class Htpasswd:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._users: dict[str, bytes] = {}
        self._signature: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._verified: dict[tuple[str, bytes], float] = {}
        self._key = os.urandom(32)
        self.reload()  # errors at startup are fatal: the operator must see them

    def reload(self) -> None:
        stat = self.path.stat()
        users = parse_htpasswd(self.path.read_text(), str(self.path))
        self._users, self._signature = users, (stat.st_mtime_ns, stat.st_size)
        self._verified.clear()

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < STAT_INTERVAL:
            return
        self._checked_at = now
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._signature:
                self.reload()
                log.info("reloaded %s (%d users)", self.path, len(self._users))
        except (OSError, HtpasswdError) as exc:
            log.error("keeping the previous users: cannot reload %s: %s", self.path, exc)

    def has_user(self, user: str) -> bool:
        self._reload_if_changed()
        return user in self._users

    async def verify(self, user: str, password: str) -> bool:
        self._reload_if_changed()
        hashed = self._users.get(user)
        if hashed is None:
            # Spend the same time as for a known user, so responses do not reveal user names.
            hashed = b"$2b$10$" + b"." * 53
        key = (user, hmac.new(self._key, password.encode(), hashlib.sha256).digest())
        now = time.monotonic()
        if user in self._users and self._verified.get(key, 0.0) > now:
            return True
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, _check, password.encode(), hashed)
        if ok and user in self._users:
            self._verified[key] = now + VERIFIED_TTL
        return ok and user in self._users


def _check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


def hash_password(password: str, rounds: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
