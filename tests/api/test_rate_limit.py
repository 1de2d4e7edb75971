"""rate_limit: per-client and per-user request limits answered with 429 and Retry-After."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from cargobay.auth.htpasswd import hash_password
from tests.api.helpers import assert_error
from tests.server import RegistryProcess


def test_per_client_limit(start_registry: Callable[..., RegistryProcess]) -> None:
    server = start_registry(workers=1, config={"rate_limit": {"per_client": 1, "burst": 5}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        statuses = [client.get("/v2/").status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5
        refused = client.get("/v2/")
        assert_error(refused, 429, "TOOMANYREQUESTS")
        assert int(refused.headers["Retry-After"]) >= 1
        assert client.get("/healthz").status_code == 200  # only /v2/ is limited


def test_per_user_limit_applies_to_each_user(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        "".join(f"{u}:{hash_password('pw-' + u, rounds=4)}\n" for u in ("ann", "bob"))
    )
    server = start_registry(
        workers=1,
        config={"auth": {"htpasswd": str(htpasswd)}, "rate_limit": {"per_user": 1, "burst": 3}},
    )
    with httpx.Client(base_url=server.url, timeout=30, auth=("ann", "pw-ann")) as ann:
        assert [ann.get("/v2/").status_code for _ in range(4)] == [200, 200, 200, 429]
    with httpx.Client(base_url=server.url, timeout=30, auth=("bob", "pw-bob")) as bob:
        assert bob.get("/v2/").status_code == 200
