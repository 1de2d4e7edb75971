"""Docker token authentication with the built-in token server (spec-auth-token.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cargobay.auth.htpasswd import hash_password
from tests.api.helpers import assert_error, push_image
from tests.server import RegistryProcess
from tests.tls import write_signing_key

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
ACCESS = [
    {"users": ["alice"], "repositories": ["*"], "actions": ["*"]},
    {"users": ["bob"], "repositories": ["*"], "actions": ["pull"]},
    {"users": ["anonymous"], "repositories": ["public/*"], "actions": ["pull"]},
]


@pytest.fixture
def token_registry(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> RegistryProcess:
    write_signing_key(tmp_path / "signing.pem")
    (tmp_path / "htpasswd").write_text(
        "".join(f"{u}:{hash_password(p, rounds=4)}\n" for u, p in USERS.items())
    )
    return start_registry(
        config={
            "auth": {
                "htpasswd": str(tmp_path / "htpasswd"),
                "access": ACCESS,
                "token": {
                    "issuer": "cargobay-test",
                    "service": "test-registry",
                    "signing_key": str(tmp_path / "signing.pem"),
                },
            }
        }
    )


def challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def token(
    server: RegistryProcess, *scopes: str, user: str | None = None, service: str = "test-registry"
) -> str:
    auth = (user, USERS[user]) if user else None
    r = httpx.get(
        f"{server.url}/auth/token",
        params=[("service", service), *[("scope", s) for s in scopes]],
        auth=auth,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] > 0
    return str(body["token"])


def bearer(server: RegistryProcess, value: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {value}"})


def test_challenge_names_realm_service_and_scope(token_registry: RegistryProcess) -> None:
    r = httpx.get(f"{token_registry.url}/v2/")
    assert_error(r, 401, "UNAUTHORIZED")
    fields = challenge(r)
    assert fields["realm"] == f"{token_registry.url}/auth/token"
    assert fields["service"] == "test-registry"
    r = httpx.post(f"{token_registry.url}/v2/team/app/blobs/uploads/")
    assert challenge(r)["scope"] == "repository:team/app:pull,push"


def test_token_flow_push_and_pull(token_registry: RegistryProcess) -> None:
    push_token = token(token_registry, "repository:team/app:pull,push", user="alice")
    with bearer(token_registry, push_token) as alice:
        assert alice.get("/v2/").status_code == 200
        _, digest = push_image(alice, "team/app", "v1")
    pull_token = token(token_registry, "repository:team/app:pull", user="bob")
    with bearer(token_registry, pull_token) as bob:
        assert bob.get("/v2/team/app/manifests/v1").status_code == 200
        r = bob.post("/v2/team/app/blobs/uploads/")
        assert_error(r, 401, "UNAUTHORIZED")  # go get a token with push
        assert challenge(r)["scope"] == "repository:team/app:pull,push"
    # Bob asked for push too: he gets what he may have (pull), not an error.
    partial = token(token_registry, "repository:team/app:pull,push", user="bob")
    with bearer(token_registry, partial) as bob:
        assert bob.get(f"/v2/team/app/manifests/{digest}").status_code == 200
        assert bob.post("/v2/team/app/blobs/uploads/").status_code == 401


def test_token_for_one_repository_does_not_open_another(token_registry: RegistryProcess) -> None:
    value = token(token_registry, "repository:a/b:pull,push", user="alice")
    with bearer(token_registry, value) as client:
        assert client.get("/v2/a/b/tags/list").status_code in (200, 404)
        assert_error(client.get("/v2/a/b-c/tags/list"), 401, "UNAUTHORIZED")
        assert_error(client.get("/v2/a/tags/list"), 401, "UNAUTHORIZED")


def test_anonymous_tokens_get_only_public_pulls(token_registry: RegistryProcess) -> None:
    with bearer(
        token_registry, token(token_registry, "repository:public/x:pull,push", user="alice")
    ) as a:
        push_image(a, "public/x", "v1")
    anonymous = token(token_registry, "repository:public/x:pull,push", "repository:team/app:pull")
    with bearer(token_registry, anonymous) as client:
        assert client.get("/v2/public/x/manifests/v1").status_code == 200
        assert client.post("/v2/public/x/blobs/uploads/").status_code == 401
        assert client.get("/v2/team/app/tags/list").status_code == 401


def test_catalog_needs_catalog_scope(token_registry: RegistryProcess) -> None:
    without = token(token_registry, "repository:team/app:pull", user="alice")
    with bearer(token_registry, without) as client:
        assert_error(client.get("/v2/_catalog"), 401, "UNAUTHORIZED")
    with bearer(token_registry, token(token_registry, "registry:catalog:*", user="alice")) as c:
        assert c.get("/v2/_catalog").status_code == 200
    anonymous = token(token_registry, "registry:catalog:*")
    with bearer(token_registry, anonymous) as client:
        assert client.get("/v2/_catalog").status_code == 401


@pytest.mark.parametrize(
    "value",
    ["not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJjYXJnb2JheS10ZXN0In0."],
)
def test_garbage_tokens_are_refused(token_registry: RegistryProcess, value: str) -> None:
    with bearer(token_registry, value) as client:
        assert_error(client.get("/v2/"), 401, "UNAUTHORIZED")


def test_token_endpoint_refuses_bad_credentials_and_services(
    token_registry: RegistryProcess,
) -> None:
    r = httpx.get(f"{token_registry.url}/auth/token", auth=("alice", "wrong"))
    assert_error(r, 401, "UNAUTHORIZED")
    r = httpx.get(f"{token_registry.url}/auth/token", params={"service": "elsewhere"})
    assert r.status_code == 400


def test_oauth2_password_grant_and_jwks(token_registry: RegistryProcess) -> None:
    r = httpx.post(
        f"{token_registry.url}/auth/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": USERS["alice"],
            "service": "test-registry",
            "scope": "repository:team/app:pull",
            "client_id": "test",
        },
    )
    assert r.status_code == 200, r.text
    with bearer(token_registry, r.json()["access_token"]) as client:
        assert client.get("/v2/").status_code == 200
    keys = httpx.get(f"{token_registry.url}/auth/jwks").json()["keys"]
    assert keys[0]["kty"] == "EC" and keys[0]["alg"] == "ES256" and keys[0]["kid"]


def test_robot_token_at_the_token_endpoint(token_registry: RegistryProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cargobay", "token", "create", "bot", "--scope", "bots/*:pull",
         "--data-dir", str(token_registry.data_dir)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    robot = result.stdout.strip()
    r = httpx.get(
        f"{token_registry.url}/auth/token",
        params=[("service", "test-registry"), ("scope", "repository:bots/x:pull,push")],
        auth=("bot", robot),
    )
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["sub"] == "robot:bot"
    assert claims["access"] == [{"type": "repository", "name": "bots/x", "actions": ["pull"]}]


def test_refresh_tokens_until_revoked(token_registry: RegistryProcess) -> None:
    r = httpx.get(
        f"{token_registry.url}/auth/token",
        params={"service": "test-registry", "offline_token": "true", "client_id": "test"},
        auth=("alice", USERS["alice"]),
    )
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    assert refresh.startswith("cbr_")

    def refreshed() -> httpx.Response:
        return httpx.post(
            f"{token_registry.url}/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "service": "test-registry",
                "scope": "repository:team/app:pull,push",
                "client_id": "test",
            },
        )

    r = refreshed()
    assert r.status_code == 200, r.text
    with bearer(token_registry, r.json()["access_token"]) as alice:
        push_image(alice, "team/app", "refreshed")
    token_id = refresh.removeprefix("cbr_").split("_")[0]
    subprocess.run(
        [sys.executable, "-m", "cargobay", "token", "revoke", token_id,
         "--data-dir", str(token_registry.data_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert_error(refreshed(), 401, "UNAUTHORIZED")  # a replayed refresh token after revocation
    anonymous = httpx.get(
        f"{token_registry.url}/auth/token", params={"offline_token": "true"}
    ).json()
    assert "refresh_token" not in anonymous


def test_tokens_from_an_external_issuer(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    """Behind an existing auth server: verify its tokens with the keys of a JWKS file."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(issuer_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "external-1"}]}))
    (tmp_path / "htpasswd").write_text("")
    server = start_registry(
        config={
            "auth": {
                "htpasswd": str(tmp_path / "htpasswd"),
                "token": {
                    "issuer": "https://auth.example.invalid",
                    "service": "registry.example.invalid",
                    "realm": "https://auth.example.invalid/token",
                    "jwks": str(tmp_path / "jwks.json"),
                },
            }
        }
    )

    def external_token(
        issuer: str = "https://auth.example.invalid", key: object = issuer_key
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer, "sub": "someone", "aud": "registry.example.invalid",
            "iat": now, "exp": now + 60,
            "access": [{"type": "repository", "name": "ext/app", "actions": ["pull", "push"]}],
        }  # fmt: skip
        return jwt.encode(claims, key, "ES256", headers={"kid": "external-1"})  # type: ignore[arg-type]

    r = httpx.get(f"{server.url}/v2/")
    assert challenge(r)["realm"] == "https://auth.example.invalid/token"
    with bearer(server, external_token()) as client:
        push_image(client, "ext/app", "v1")
    with bearer(server, external_token(issuer="https://evil.invalid")) as client:
        assert_error(client.get("/v2/ext/app/manifests/v1"), 401, "UNAUTHORIZED")
    impostor = ec.generate_private_key(ec.SECP256R1())
    with bearer(server, external_token(key=impostor)) as client:
        assert_error(client.get("/v2/ext/app/manifests/v1"), 401, "UNAUTHORIZED")
    assert httpx.get(f"{server.url}/auth/token").status_code == 404  # no built-in server


def test_jwks_from_a_url_trusts_another_instances_tokens(
    token_registry: RegistryProcess, tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    """A second registry that fetches the first one's /auth/jwks accepts its tokens."""
    (tmp_path / "empty-htpasswd").write_text("")
    follower = start_registry(
        data_dir=tmp_path / "follower",
        config={
            "auth": {
                "htpasswd": str(tmp_path / "empty-htpasswd"),
                "token": {
                    "issuer": "cargobay-test",
                    "service": "test-registry",
                    "realm": f"{token_registry.url}/auth/token",
                    "jwks": f"{token_registry.url}/auth/jwks",
                },
            }
        },
    )
    value = token(token_registry, "repository:shared/app:pull,push", user="alice")
    with bearer(follower, value) as client:
        push_image(client, "shared/app", "v1")
        assert client.get("/v2/shared/app/tags/list").json()["tags"] == ["v1"]
    assert (
        challenge(httpx.get(f"{follower.url}/v2/"))["realm"] == f"{token_registry.url}/auth/token"
    )


def test_no_credentials_or_tokens_in_logs(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    """Even at debug level (which logs every request), secrets never reach the log."""
    write_signing_key(tmp_path / "k.pem")
    (tmp_path / "htpasswd").write_text(f"alice:{hash_password(USERS['alice'], rounds=4)}\n")
    server = start_registry(
        env={"CARGOBAY_LOG_LEVEL": "debug"},
        config={
            "auth": {
                "htpasswd": str(tmp_path / "htpasswd"),
                "token": {"issuer": "i", "service": "s", "signing_key": str(tmp_path / "k.pem")},
            }
        },
    )
    r = httpx.get(
        f"{server.url}/auth/token",
        params={"service": "s", "scope": "repository:x/y:pull", "offline_token": "true"},
        auth=("alice", USERS["alice"]),
    )
    secrets = [USERS["alice"], r.json()["token"], r.json()["refresh_token"]]
    with bearer(server, secrets[1]) as client:
        client.get("/v2/x/y/tags/list")
    httpx.get(f"{server.url}/v2/", auth=("alice", "a-wrong-password"))
    httpx.post(
        f"{server.url}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": secrets[2], "service": "s"},
    )
    log = server.log()
    assert "GET /v2/{name}/tags/list 404" in log  # the access log is on
    assert "repository=x/y" in log
    for secret in [*secrets, "a-wrong-password"]:
        assert secret not in log


def test_tampered_expired_and_misaddressed_tokens_are_refused(
    token_registry: RegistryProcess, tmp_path: Path
) -> None:
    good = token(token_registry, "repository:team/app:pull", user="bob")
    header, payload, signature = good.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["access"][0]["actions"] = ["pull", "push"]  # bob grants himself push
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    key = serialization.load_pem_private_key((tmp_path / "signing.pem").read_bytes(), None)
    kid = jwt.get_unverified_header(good)["kid"]
    now = int(time.time())

    def signed(**changes: object) -> str:
        return jwt.encode({**claims, **changes}, key, "ES256", headers={"kid": kid})  # type: ignore[arg-type]

    for value in (
        f"{header}.{forged}.{signature}",  # tampered
        signed(exp=now - 600, iat=now - 900, nbf=now - 900),  # expired
        signed(aud="another-registry"),  # wrong audience
        signed(iss="someone-else"),  # wrong issuer
    ):
        with bearer(token_registry, value) as client:
            assert_error(client.get("/v2/team/app/tags/list"), 401, "UNAUTHORIZED")
    with bearer(token_registry, signed()) as client:  # the same claims, properly signed: fine
        assert client.get("/v2/team/app/tags/list").status_code in (200, 404)
