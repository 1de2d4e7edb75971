"""Docker registry bearer tokens: JWTs carrying the granted access, signed by the built-in token
server and verified by the registry (ES256 by default; RS256 and EdDSA keys work too)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import itertools
import json
import os
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cargobay.auth.scope import Scope

ALGORITHMS = ("ES256", "RS256", "EdDSA")
LEEWAY_SECONDS = 30


class TokenInvalid(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str | None  # None: an anonymous token
    access: Mapping[tuple[str, str], frozenset[str]]

    def allows(self, kind: str, name: str, action: str) -> bool:
        granted = self.access.get((kind, name), frozenset())
        return action in granted or "*" in granted


def _algorithm(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise TokenInvalid(f"unsupported key type {type(key).__name__}")


def key_id(public_key: Any) -> str:
    """A stable id for a public key: the SHA-256 of its DER encoding, base32 without padding."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")


class TokenSigner:
    def __init__(self, private_key_pem: Path, issuer: str, lifetime: int) -> None:
        self._use(serialization.load_pem_private_key(private_key_pem.read_bytes(), None))
        self.issuer = issuer
        self.lifetime = lifetime

    @classmethod
    def from_secret(cls, secret: str, issuer: str, lifetime: int) -> TokenSigner:
        """An Ed25519 key derived from the instances' shared secret, so that every instance
        signs with the same key without a key file to distribute."""
        seed = HKDF(hashes.SHA256(), 32, salt=None, info=b"cargobay token signing key")
        signer = cls.__new__(cls)
        signer._use(ed25519.Ed25519PrivateKey.from_private_bytes(seed.derive(secret.encode())))
        signer.issuer = issuer
        signer.lifetime = lifetime
        return signer

    def _use(self, key: Any) -> None:
        self.private_key = key
        self.public_key = key.public_key()
        self.algorithm = _algorithm(key)
        self.kid = key_id(self.public_key)

    def issue(
        self, subject: str | None, audience: str, granted: Sequence[Scope]
    ) -> tuple[str, int, int]:
        """A token and its lifetime and issue time (seconds)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": audience,
            "iat": now,
            "nbf": now - 1,
            "exp": now + self.lifetime,
            "jti": base64.urlsafe_b64encode(os.urandom(18)).decode(),
            "access": [
                {"type": s.type, "name": s.name, "actions": list(s.actions)} for s in granted
            ],
        }
        headers = {"kid": self.kid}
        token = jwt.encode(claims, self.private_key, self.algorithm, headers=headers)
        return token, self.lifetime, now

    def jwks(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.get_default_algorithms()[self.algorithm]
        jwk = json.loads(algorithm.to_jwk(self.public_key))
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.algorithm})
        return {"keys": [jwk]}


def load_jwks(source: str) -> dict[str, Any]:
    """kid -> public key from a JWKS file or http(s) URL (an external issuer's keys), read once
    at start: restart to pick up rotated keys."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=10) as response:
                text = response.read(1 << 20).decode()
        else:
            text = Path(source).read_text()
        keys = jwt.PyJWKSet.from_json(text)
    except (OSError, jwt.PyJWTError, ValueError) as exc:
        raise TokenInvalid(f"cannot load JWKS {source}: {exc}") from None
    found = {str(k.key_id): k.key for k in keys.keys if k.key_id}
    if not found:
        raise TokenInvalid(f"JWKS {source} has no keys with a kid")
    return found


def load_certificates(path: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise TokenInvalid(f"cannot load certificates {path}: {exc}") from None
    return certificates


class TokenVerifier:
    def __init__(
        self,
        keys: Mapping[str, Any],
        issuer: str,
        audience: str,
        roots: Sequence[x509.Certificate] = (),
    ) -> None:
        self.keys = dict(keys)  # kid -> public key
        self.issuer = issuer
        self.audience = audience
        # Trusted root certificates: a token may carry its signing certificate chain (x5c).
        self.roots = list(roots)

    def _chain_key(self, chain: object) -> Any:
        """The public key of the leaf of an x5c chain that leads to a trusted root."""
        if not self.roots or not isinstance(chain, list) or not chain or len(chain) > 8:
            return None
        try:
            certificates = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in chain]
        except (ValueError, TypeError):
            raise TokenInvalid("malformed x5c chain") from None
        now = datetime.datetime.now(datetime.UTC)
        for certificate in certificates:
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                raise TokenInvalid("x5c certificate outside its validity period")
        try:
            for child, parent in itertools.pairwise(certificates):
                child.verify_directly_issued_by(parent)
            last = certificates[-1]
            for root in self.roots:
                if last == root:
                    return certificates[0].public_key()
                with contextlib.suppress(ValueError, TypeError, InvalidSignature):
                    last.verify_directly_issued_by(root)
                    return certificates[0].public_key()
        except (ValueError, TypeError, InvalidSignature):
            raise TokenInvalid("x5c chain does not verify") from None
        raise TokenInvalid("x5c chain does not lead to a trusted root")

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.get(str(header.get("kid")))
            if key is None and "x5c" in header:
                key = self._chain_key(header["x5c"])
            if key is None:
                raise TokenInvalid("token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[_algorithm(key)],  # never "none", never another key type's
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from None
        access: dict[tuple[str, str], frozenset[str]] = {}
        for entry in claims.get("access") or []:
            if isinstance(entry, dict):
                key_ = (str(entry.get("type")), str(entry.get("name")))
                access[key_] = access.get(key_, frozenset()) | frozenset(
                    str(a) for a in entry.get("actions") or []
                )
        return TokenClaims(claims.get("sub") or None, access)
