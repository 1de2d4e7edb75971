"""Content digests (`algorithm:encoded`) and resumable hashers.

Hashers come from `rehashes`, whose sha256/sha512 state serializes to a few hundred bytes, so a
chunked upload can stop after any PATCH and continue hashing in another worker or instance without
re-reading what was already written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

import rehashes

from cargobay.errors import DigestInvalid

# The image-spec digest grammar, plus the encoded form each registered algorithm requires.
_DIGEST_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_ENCODED = {
    "sha256": re.compile(r"^[a-f0-9]{64}$"),
    "sha512": re.compile(r"^[a-f0-9]{128}$"),
}
SUPPORTED_ALGORITHMS = tuple(_ENCODED)
DEFAULT_ALGORITHM = "sha256"


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and check a digest; raise DigestInvalid (400) for anything malformed or for an
        algorithm this registry does not implement."""
        if not _DIGEST_GRAMMAR.fullmatch(value):
            raise DigestInvalid(f"invalid digest {value!r}")
        algorithm, _, encoded = value.partition(":")
        pattern = _ENCODED.get(algorithm)
        if pattern is None:
            raise DigestInvalid(
                f"unsupported digest algorithm {algorithm!r}",
                detail={"supported": list(SUPPORTED_ALGORITHMS)},
            )
        if not pattern.fullmatch(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest {value!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
        check_algorithm(algorithm)
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def check_algorithm(algorithm: str) -> str:
    if algorithm not in _ENCODED:
        raise DigestInvalid(
            f"unsupported digest algorithm {algorithm!r}",
            detail={"supported": list(SUPPORTED_ALGORITHMS)},
        )
    return algorithm


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def serialize(self) -> bytes: ...
    def finalize(self) -> str: ...


_HASHERS = {"sha256": rehashes.PySha256, "sha512": rehashes.PySha512}


def new_hasher(algorithm: str) -> Hasher:
    hasher: Hasher = _HASHERS[check_algorithm(algorithm)]()
    return hasher


def restore_hasher(algorithm: str, state: bytes) -> Hasher:
    hasher: Hasher = _HASHERS[check_algorithm(algorithm)].deserialize(state)
    return hasher


def finish(algorithm: str, hasher: Hasher) -> Digest:
    return Digest(algorithm, hasher.finalize())
