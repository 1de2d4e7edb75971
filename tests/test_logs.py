"""Structured logs: one access line per request with its fields, never a credential."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx

from cargobay.auth.htpasswd import hash_password
from tests.api.helpers import push_image
from tests.server import RegistryProcess

PASSWORD = "s3cret-Passw0rd"


def access_lines(server: RegistryProcess) -> list[dict[str, object]]:
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [r for r in records if r["logger"] == "cargobay.access"]


def test_json_access_log_has_every_field_and_no_secrets(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{hash_password(PASSWORD, rounds=4)}\n")
    server = start_registry(
        workers=1,
        config={
            "log_format": "json",
            "auth": {"htpasswd": str(htpasswd), "token": {"issuer": "t", "service": "reg"}},
            "secret": "shared-secret-value",
        },
    )
    with httpx.Client(base_url=server.url, timeout=60, auth=("alice", PASSWORD)) as client:
        scope = {"service": "reg", "scope": "repository:team/app:pull,push"}
        token = client.get("/auth/token", params=scope).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=60, headers=bearer) as client:
        push_image(client, "team/app", "v1")
        tagged = client.get("/v2/team/app/tags/list", headers={"X-Request-Id": "from-proxy-42"})
        assert tagged.headers["X-Request-Id"] == "from-proxy-42"
        odd = client.get("/v2/team/app/tags/list", headers={"X-Request-Id": "bad id; " + "x" * 80})
        assert odd.headers["X-Request-Id"] != "bad id; " + "x" * 80
    server.stop()  # flushes every line

    lines = access_lines(server)
    by_id = {line["request_id"]: line for line in lines}
    line = by_id["from-proxy-42"]
    assert line["method"] == "GET"
    assert line["route"] == "/v2/{name}/tags/list"
    assert line["repository"] == "team/app"
    assert line["status"] == 200
    assert line["user"] == "alice"
    assert line["client"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["bytes_out"] == len(tagged.content)
    assert by_id[odd.headers["X-Request-Id"]]["status"] == 200
    pushes = [x for x in lines if x["method"] == "PUT" and "manifests" in str(x["route"])]
    assert pushes and pushes[0]["status"] == 201 and int(pushes[0]["bytes_in"]) > 0  # type: ignore[call-overload]
    token_requests = [x for x in lines if x["route"] == "/auth/token"]
    assert token_requests and token_requests[0]["user"] is None  # signed in by the handler
    log = server.log()
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, basic, token, token.split(".")[2], "shared-secret-value"):
        assert secret not in log


def test_logfmt_format(start_registry: Callable[..., RegistryProcess]) -> None:
    server = start_registry(workers=1, config={"log_format": "logfmt"})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        rid = client.get("/v2/").headers["X-Request-Id"]
    server.stop()
    line = next(x for x in server.log().splitlines() if f"request_id={rid}" in x)
    assert "logger=cargobay.access" in line
    assert "route=/v2/ status=200" in line or "route=/v2/" in line
    assert "method=GET" in line and "status=200" in line
