"""Listing repositories: `GET /v2/_catalog` (Docker Registry HTTP API V2 "Listing Repositories")."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.api.helpers import parse_link, push_image
from tests.server import RegistryProcess


def make_repos(client: httpx.Client, names: list[str]) -> None:
    for name in names:
        push_image(client, name, "v1", layers=0)


@pytest.fixture
def fresh(start_registry: Callable[..., RegistryProcess]) -> httpx.Client:
    """A client of a registry of its own, so the catalog holds only what the test pushes."""
    server = start_registry()
    return httpx.Client(base_url=server.url, timeout=60)


def test_catalog_lists_repositories(client: httpx.Client) -> None:
    """Response: 200, `{"repositories": [<name>, ...]}`."""
    prefix = f"cat-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/b", f"{prefix}/a", f"{prefix}/c/d"]
    make_repos(client, names)
    r = client.get("/v2/_catalog", params={"n": 3, "last": prefix})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["repositories"] == sorted(names)


def test_catalog_of_empty_registry(fresh: httpx.Client) -> None:
    with fresh:
        r = fresh.get("/v2/_catalog")
        assert r.status_code == 200
        assert r.json() == {"repositories": []}
        assert "Link" not in r.headers


def test_catalog_is_sorted(fresh: httpx.Client) -> None:
    """'The catalog result set is represented abstractly as a lexically sorted list'."""
    names = ["zeta", "alpha/beta", "alpha", "alpha-b", "alpha.b", "alpha_b", "b/a", "0repo"]
    with fresh:
        make_repos(fresh, names)
        r = fresh.get("/v2/_catalog")
        assert r.json()["repositories"] == sorted(names)
        assert "Link" not in r.headers


def test_catalog_pagination(fresh: httpx.Client) -> None:
    """'If the value of n is 2, a and b will be returned on the first response. The Link header
    returned on the response will have n set to 2 and last set to b'."""
    with fresh:
        make_repos(fresh, ["a", "b", "c", "d"])
        r = fresh.get("/v2/_catalog", params={"n": 2})
        assert r.json()["repositories"] == ["a", "b"]
        link = parse_link(r.headers["Link"])
        query = httpx.URL(link).params
        assert query["n"] == "2"
        assert query["last"] == "b"
        r = fresh.get(link)
        assert r.json()["repositories"] == ["c", "d"]
        assert "Link" not in r.headers


def test_catalog_last_is_exclusive(fresh: httpx.Client) -> None:
    with fresh:
        make_repos(fresh, ["a", "b", "c"])
        assert fresh.get("/v2/_catalog", params={"last": "a"}).json()["repositories"] == ["b", "c"]


def test_catalog_n_zero(fresh: httpx.Client) -> None:
    with fresh:
        make_repos(fresh, ["a"])
        r = fresh.get("/v2/_catalog", params={"n": 0})
        assert r.status_code == 200
        assert r.json()["repositories"] == []
        assert "Link" not in r.headers


@pytest.mark.parametrize("n", ["-1", "abc"])
def test_catalog_invalid_n_is_400(client: httpx.Client, n: str) -> None:
    r = client.get("/v2/_catalog", params={"n": n})
    assert r.status_code == 400
    assert r.json()["errors"]


def test_catalog_default_page_and_link(fresh: httpx.Client) -> None:
    """'A registry may also limit the amount of responses returned even if pagination was not
    explicitly requested. In this case the Link header will be returned' (cargobay: 100)."""
    names = [f"r{i:03d}" for i in range(105)]
    with fresh:
        make_repos(fresh, names)
        r = fresh.get("/v2/_catalog")
        first = r.json()["repositories"]
        assert first == names[:100]
        r = fresh.get(parse_link(r.headers["Link"]))
        assert r.json()["repositories"] == names[100:]
        assert "Link" not in r.headers


def test_catalog_follow_links(fresh: httpx.Client) -> None:
    """'The above process should then be repeated until the Link header is no longer set.'"""
    names = [f"repo{i:02d}/x" for i in range(11)]
    with fresh:
        make_repos(fresh, names)
        collected: list[str] = []
        url: str | None = "/v2/_catalog?n=3"
        while url is not None:
            r = fresh.get(url)
            collected += r.json()["repositories"]
            url = parse_link(r.headers["Link"]) if "Link" in r.headers else None
        assert collected == names


def test_deleted_repository_contents_do_not_break_catalog(fresh: httpx.Client) -> None:
    with fresh:
        _, digest = push_image(fresh, "gone", "v1", layers=0)
        assert fresh.delete(f"/v2/gone/manifests/{digest}").status_code == 202
        r = fresh.get("/v2/_catalog")
        assert r.status_code == 200
        assert isinstance(r.json()["repositories"], list)
