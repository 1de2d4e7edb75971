from __future__ import annotations

import hashlib

import pytest

from cargobay.errors import DigestInvalid
from cargobay.registry.digest import Digest, finish, new_hasher, restore_hasher


def test_parse_round_trips() -> None:
    text = "sha256:" + "a" * 64
    assert str(Digest.parse(text)) == text
    assert Digest.parse("sha512:" + "0" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(bad)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_hash_state_survives_serialization(algorithm: str) -> None:
    hasher = new_hasher(algorithm)
    hasher.update(b"first part, ")
    resumed = restore_hasher(algorithm, hasher.serialize())
    resumed.update(b"second part")
    expected = hashlib.new(algorithm, b"first part, second part").hexdigest()
    assert finish(algorithm, resumed) == Digest(algorithm, expected)


def test_of() -> None:
    assert Digest.of(b"{}") == Digest(
        "sha256", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
