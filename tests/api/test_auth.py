"""Basic authentication with htpasswd, the access policy, and TLS (issue 4, first part)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cargobay.auth.htpasswd import hash_password
from tests.api.helpers import assert_error, push_blob, push_image, random_blob, start_upload
from tests.server import RegistryProcess
from tests.tls import make_certificates

USERS = {"alice": "alice-secret", "bob": "bob-secret"}
ACCESS = [
    {"users": ["*"], "repositories": ["*"], "actions": ["pull"]},
    {"users": ["alice"], "repositories": ["*"], "actions": ["*"]},
    {"users": ["anonymous"], "repositories": ["public/*"], "actions": ["pull"]},
]


@dataclass
class Secured:
    server: RegistryProcess
    trust: ssl.SSLContext  # trusts the test CA that signed the server's certificate

    @property
    def url(self) -> str:
        return self.server.url


def write_htpasswd(path: Path) -> str:
    path.write_text("".join(f"{u}:{hash_password(p, rounds=4)}\n" for u, p in USERS.items()))
    return str(path)


@pytest.fixture
def secured(tmp_path: Path, start_registry: Callable[..., RegistryProcess]) -> Secured:
    certificates = make_certificates(tmp_path / "tls")
    server = start_registry(
        config={
            "auth": {"htpasswd": write_htpasswd(tmp_path / "htpasswd"), "access": ACCESS},
            "tls": {"certificate": str(certificates.certificate), "key": str(certificates.key)},
        }
    )
    return Secured(server, ssl.create_default_context(cafile=str(certificates.ca)))


def client_for(secured: Secured, user: str | None = None) -> httpx.Client:
    auth = (user, USERS[user]) if user else None
    return httpx.Client(base_url=secured.url, auth=auth, verify=secured.trust, timeout=30)


def test_serves_https_with_the_configured_certificate(secured: Secured) -> None:
    assert secured.url.startswith("https://127.0.0.1:")
    with client_for(secured, "alice") as alice:
        assert alice.get("/v2/").status_code == 200
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(secured.url + "/v2/", verify=True)


def test_base_endpoint_challenges_anonymous_requests(secured: Secured) -> None:
    with client_for(secured) as anonymous:
        r = anonymous.get("/v2/")
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"].startswith('Basic realm="cargobay"')


@pytest.mark.parametrize(
    "authorization",
    ["Basic " + "YWxpY2U6d3Jvbmc=", "Basic !!!", "Basic " + "bm9jb2xvbg==", "Bearer abc"],
)
def test_bad_credentials_are_refused(secured: Secured, authorization: str) -> None:
    with client_for(secured) as anonymous:
        r = anonymous.get("/v2/", headers={"Authorization": authorization})
    assert_error(r, 401, "UNAUTHORIZED")


def test_empty_basic_credentials_are_anonymous(secured: Secured) -> None:
    """containers/image (skopeo, podman) sends `Basic Og==` when it has no credentials."""
    with client_for(secured, "alice") as alice, client_for(secured) as anonymous:
        push_image(alice, "public/empty-creds", "v1")
        empty = {"Authorization": "Basic Og=="}
        assert (
            anonymous.get("/v2/public/empty-creds/manifests/v1", headers=empty).status_code == 200
        )
        assert_error(anonymous.get("/v2/", headers=empty), 401, "UNAUTHORIZED")


def test_unknown_user_is_refused(secured: Secured) -> None:
    with httpx.Client(base_url=secured.url, auth=("mallory", "x"), verify=secured.trust) as mallory:
        assert_error(mallory.get("/v2/"), 401, "UNAUTHORIZED")


def test_push_needs_push_access(secured: Secured) -> None:
    with client_for(secured, "alice") as alice, client_for(secured, "bob") as bob:
        _, digest = push_image(alice, "team/app", "v1")
        assert bob.get(f"/v2/team/app/manifests/{digest}").status_code == 200
        assert_error(bob.post("/v2/team/app/blobs/uploads/"), 403, "DENIED")
        assert_error(bob.delete(f"/v2/team/app/manifests/{digest}"), 403, "DENIED")
        assert alice.delete("/v2/team/app/manifests/v1").status_code == 202


def test_anonymous_pull_only_where_the_policy_allows(secured: Secured) -> None:
    with client_for(secured, "alice") as alice, client_for(secured) as anonymous:
        push_image(alice, "public/tool", "v1")
        push_image(alice, "private/tool", "v1")
        assert anonymous.get("/v2/public/tool/manifests/v1").status_code == 200
        assert anonymous.get("/v2/public/tool/tags/list").json()["tags"] == ["v1"]
        r = anonymous.get("/v2/private/tool/manifests/v1")
        assert_error(r, 401, "UNAUTHORIZED")
        assert "WWW-Authenticate" in r.headers
        assert_error(anonymous.post("/v2/public/tool/blobs/uploads/"), 401, "UNAUTHORIZED")


def test_upload_sessions_need_push_access(secured: Secured) -> None:
    with client_for(secured, "alice") as alice, client_for(secured, "bob") as bob:
        location = start_upload(alice, "team/uploads")
        assert_error(bob.get(location), 403, "DENIED")
        assert_error(bob.delete(location), 403, "DENIED")
        assert alice.get(location).status_code == 204


def test_mount_only_from_readable_repositories(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    server = start_registry(
        config={
            "auth": {
                "htpasswd": write_htpasswd(tmp_path / "htpasswd"),
                "access": [
                    {"users": ["alice"], "repositories": ["*"], "actions": ["*"]},
                    {"users": ["bob"], "repositories": ["bob/*"], "actions": ["*"]},
                ],
            }
        }
    )
    with (
        httpx.Client(base_url=server.url, auth=("alice", USERS["alice"])) as alice,
        httpx.Client(base_url=server.url, auth=("bob", USERS["bob"])) as bob,
    ):
        _, digest = push_blob(alice, "alice/secret", random_blob(100))
        _, own = push_blob(bob, "bob/source", random_blob(100))
        # Knowing a digest must not let bob copy alice's blob into his repository.
        r = bob.post(
            "/v2/bob/copy/blobs/uploads/", params={"mount": digest, "from": "alice/secret"}
        )
        assert r.status_code == 202
        r = bob.post("/v2/bob/copy/blobs/uploads/", params={"mount": digest})
        assert r.status_code == 202
        r = bob.post("/v2/bob/copy/blobs/uploads/", params={"mount": own, "from": "bob/source"})
        assert r.status_code == 201
        # The catalog shows bob only what he may pull.
        assert bob.get("/v2/_catalog").json()["repositories"] == ["bob/copy", "bob/source"]
        assert "alice/secret" in alice.get("/v2/_catalog").json()["repositories"]


def test_catalog_lists_only_pullable_repositories(secured: Secured) -> None:
    with client_for(secured, "alice") as alice, client_for(secured) as anonymous:
        push_image(alice, "public/listed", "v1")
        push_image(alice, "hidden/repo", "v1")
        assert_error(anonymous.get("/v2/_catalog"), 401, "UNAUTHORIZED")
        names = alice.get("/v2/_catalog", params={"n": 1000}).json()["repositories"]
        assert {"public/listed", "hidden/repo"} <= set(names)


def test_failed_logins_are_rate_limited(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    server = start_registry(
        workers=1,  # the counts are per worker process
        config={"auth": {"htpasswd": write_htpasswd(tmp_path / "htpasswd")}},
    )
    with httpx.Client(base_url=server.url, auth=("bob", "guess")) as guesser:
        statuses = [guesser.get("/v2/").status_code for _ in range(10)]
        assert statuses == [401] * 10
        r = guesser.get("/v2/")
        assert_error(r, 429, "TOOMANYREQUESTS")
        assert 0 < int(r.headers["Retry-After"]) <= 60
    with httpx.Client(base_url=server.url, auth=("bob", USERS["bob"])) as bob:
        assert_error(bob.get("/v2/"), 429, "TOOMANYREQUESTS")  # the user is blocked too


def test_robot_tokens_work_as_passwords_until_revoked(
    tmp_path: Path, start_registry: Callable[..., RegistryProcess]
) -> None:
    data = tmp_path / "robot-data"

    def cargobay(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "cargobay", "token", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.strip()

    token = cargobay("create", "ci-bot", "--scope", "team/*:pull,push")
    assert token.startswith("cbt_")
    server = start_registry(
        data_dir=data, config={"auth": {"htpasswd": write_htpasswd(tmp_path / "htpasswd")}}
    )
    with httpx.Client(base_url=server.url, auth=("anything", token)) as robot:
        assert robot.get("/v2/").status_code == 200
        push_image(robot, "team/app", "v1")
        assert_error(robot.post("/v2/other/app/blobs/uploads/"), 403, "DENIED")
        assert_error(robot.delete("/v2/team/app/manifests/v1"), 403, "DENIED")
        assert_error(robot.get("/v2/_catalog"), 403, "DENIED")
        token_id = token.removeprefix("cbt_").split("_")[0]
        listed = cargobay("list")
        assert token_id in listed and "ci-bot" in listed and "team/*:pull,push" in listed
        assert token.split("_", 2)[2] not in listed  # the secret is never shown again
        cargobay("revoke", token_id)
        assert_error(robot.get("/v2/team/app/manifests/v1"), 401, "UNAUTHORIZED")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with httpx.Client(base_url=server.url, auth=("x", tampered)) as forged:
        assert_error(forged.get("/v2/"), 401, "UNAUTHORIZED")


def test_groups_and_admins(tmp_path: Path, start_registry: Callable[..., RegistryProcess]) -> None:
    server = start_registry(
        config={
            "auth": {
                "htpasswd": write_htpasswd(tmp_path / "htpasswd"),
                "groups": [{"name": "devs", "users": ["bob"]}],
                "admins": ["alice"],
                "access": [
                    {
                        "users": ["group:devs"],
                        "repositories": ["dev/*"],
                        "actions": ["pull", "push"],
                    }
                ],
            }
        }
    )
    with (
        httpx.Client(base_url=server.url, auth=("bob", USERS["bob"])) as bob,
        httpx.Client(base_url=server.url, auth=("alice", USERS["alice"])) as alice,
    ):
        push_image(bob, "dev/tool", "v1")  # bob pushes through his group
        assert_error(bob.post("/v2/prod/tool/blobs/uploads/"), 403, "DENIED")
        assert_error(bob.delete("/v2/dev/tool/manifests/v1"), 403, "DENIED")
        push_image(alice, "prod/tool", "v1")  # alice is an admin: anything, anywhere
        assert alice.delete("/v2/dev/tool/manifests/v1").status_code == 202
