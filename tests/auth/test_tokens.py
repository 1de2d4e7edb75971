from __future__ import annotations

import base64
import datetime
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from cargobay.auth.scope import Scope, parse_scopes
from cargobay.auth.tokens import TokenInvalid, TokenSigner, TokenVerifier


def write_key(path: Path, key: object) -> Path:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(params=["ec", "rsa", "ed25519"])
def signer(request: pytest.FixtureRequest, tmp_path: Path) -> TokenSigner:
    key = {
        "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[request.param]()
    return TokenSigner(write_key(tmp_path / "key.pem", key), "issuer", 300)


def verifier_for(signer: TokenSigner, audience: str = "svc") -> TokenVerifier:
    return TokenVerifier({signer.kid: signer.public_key}, "issuer", audience)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:a/b:pull,push", Scope("repository", "a/b", ("pull", "push"))),
        ("repository:host:5000/a/b:pull", Scope("repository", "host:5000/a/b", ("pull",))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        ("repository:a:", Scope("repository", "a", ())),
    ],
)
def test_scope_grammar(text: str, expected: Scope) -> None:
    assert Scope.parse(text) == expected
    assert str(expected) == text


def test_several_scopes_and_garbage() -> None:
    scopes = parse_scopes(["repository:a:pull repository:b:push", "nonsense", "x:y"])
    assert [s.name for s in scopes] == ["a", "b"]


def test_round_trip(signer: TokenSigner) -> None:
    token, lifetime, _ = signer.issue("alice", "svc", [Scope("repository", "a/b", ("pull",))])
    claims = verifier_for(signer).verify(token)
    assert claims.subject == "alice" and lifetime == 300
    assert claims.allows("repository", "a/b", "pull")
    assert not claims.allows("repository", "a/b", "push")
    assert not claims.allows("repository", "a/b-c", "pull")


def test_tampered_signature_is_refused(signer: TokenSigner) -> None:
    token, _, _ = signer.issue("alice", "svc", [Scope("repository", "a", ("pull",))])
    header, _, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        b'{"iss":"issuer","aud":"svc","sub":"alice","exp":9999999999,'
        b'"access":[{"type":"repository","name":"a","actions":["push"]}]}'
    ).decode()
    with pytest.raises(TokenInvalid):
        verifier_for(signer).verify(f"{header}.{forged}.{signature}")


def test_alg_none_is_refused(signer: TokenSigner) -> None:
    token = jwt.encode(
        {"iss": "issuer", "aud": "svc", "exp": int(time.time()) + 60},
        key=None,
        algorithm="none",
        headers={"kid": signer.kid},
    )
    with pytest.raises(TokenInvalid):
        verifier_for(signer).verify(token)


def test_wrong_audience_issuer_expiry_and_key(signer: TokenSigner, tmp_path: Path) -> None:
    token, _, _ = signer.issue("alice", "svc", [])
    with pytest.raises(TokenInvalid):
        verifier_for(signer, audience="other").verify(token)
    with pytest.raises(TokenInvalid):
        TokenVerifier({signer.kid: signer.public_key}, "someone-else", "svc").verify(token)
    old = signer.lifetime
    signer.lifetime = -120  # already expired beyond the leeway
    try:
        stale, _, _ = signer.issue("alice", "svc", [])
    finally:
        signer.lifetime = old
    with pytest.raises(TokenInvalid, match="expired"):
        verifier_for(signer).verify(stale)
    other = TokenSigner(
        write_key(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1())), "issuer", 60
    )
    with pytest.raises(TokenInvalid, match="unknown key"):
        verifier_for(signer).verify(other.issue("alice", "svc", [])[0])


def certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None, ca: bool,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


def x5c_token(leaf_key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> str:
    der = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    claims = {"iss": "issuer", "aud": "svc", "sub": "x", "exp": int(time.time()) + 60}
    return jwt.encode(claims, leaf_key, "ES256", headers={"x5c": der})


def test_x5c_chain_to_a_trusted_root() -> None:
    root_key, middle_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = certificate("root", root_key, None, None, ca=True)
    middle = certificate("middle", middle_key, root, root_key, ca=True)
    leaf = certificate("signer", leaf_key, middle, middle_key, ca=False)
    verifier = TokenVerifier({}, "issuer", "svc", roots=[root])
    assert verifier.verify(x5c_token(leaf_key, [leaf, middle])).subject == "x"
    assert verifier.verify(x5c_token(leaf_key, [leaf, middle, root])).subject == "x"

    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = certificate("stranger", stranger_key, None, None, ca=True)
    with pytest.raises(TokenInvalid, match="trusted root"):
        verifier.verify(x5c_token(stranger_key, [stranger]))
    with pytest.raises(TokenInvalid):  # the chain is fine but the token is signed by another key
        verifier.verify(x5c_token(stranger_key, [leaf, middle]))
    with pytest.raises(TokenInvalid, match="unknown key"):  # no roots configured: no x5c
        TokenVerifier({}, "issuer", "svc").verify(x5c_token(leaf_key, [leaf, middle]))
