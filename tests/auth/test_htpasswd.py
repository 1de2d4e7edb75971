from __future__ import annotations

import os
from pathlib import Path

import pytest

from cargobay.auth.htpasswd import Htpasswd, HtpasswdError, hash_password, parse_htpasswd


def write_users(path: Path, **users: str) -> None:
    path.write_text("".join(f"{u}:{hash_password(p, rounds=4)}\n" for u, p in users.items()))


async def test_verify(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    write_users(path, alice="secret", bob="hunter2")
    users = Htpasswd(path)
    assert await users.verify("alice", "secret")
    assert await users.verify("alice", "secret")  # from the cache of verified passwords
    assert not await users.verify("alice", "wrong")
    assert not await users.verify("carol", "secret")
    assert await users.verify("bob", "hunter2")


async def test_reloads_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    write_users(path, alice="old")
    users = Htpasswd(path)
    assert await users.verify("alice", "old")
    write_users(path, alice="new", dave="pw")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    users._checked_at = 0.0  # skip the once-a-second stat throttle
    assert await users.verify("alice", "new")
    assert not await users.verify("alice", "old")
    assert await users.verify("dave", "pw")


def test_only_bcrypt_is_accepted() -> None:
    with pytest.raises(HtpasswdError, match="bcrypt"):
        parse_htpasswd("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "htpasswd")
    with pytest.raises(HtpasswdError, match="USER:HASH"):
        parse_htpasswd("no colon here\n", "htpasswd")
    assert parse_htpasswd("# comment\n\n", "htpasswd") == {}


def test_apache_2y_hashes(tmp_path: Path) -> None:
    hashed = hash_password("pw", rounds=4).replace("$2b$", "$2y$", 1)
    assert parse_htpasswd(f"alice:{hashed}\n", "htpasswd")["alice"].startswith(b"$2y$")
