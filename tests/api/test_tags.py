"""Content discovery: listing tags (end-8a, end-8b)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import (
    SPEC_ERROR_CODES,
    assert_error,
    error_codes,
    parse_link,
    push_image,
    push_manifest,
    repo_name,
)


def tagged_repo(client: httpx.Client, tags: list[str]) -> str:
    """A repository holding one manifest under all `tags`."""
    name = repo_name()
    body, _ = push_image(client, name, tags[0])
    for tag in tags[1:]:
        push_manifest(client, name, tag, body)
    return name


def test_list_tags_200(client: httpx.Client) -> None:
    """'Assuming a repository is found, this request MUST return a 200 OK response code' with
    body {"name": "<name>", "tags": [...]}."""
    name = tagged_repo(client, ["v2", "v1", "latest"])
    r = client.get(f"/v2/{name}/tags/list")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"name": name, "tags": ["latest", "v1", "v2"]}
    assert "Link" not in r.headers


def test_tags_are_in_asciibetical_order(client: httpx.Client) -> None:
    """'the tags MUST be in lexical ... or ASCIIbetical (Go's sort.Strings) order'."""
    tags = ["b", "B", "a", "A", "_x", "1", "10", "9", "a.b", "a-b", "a_b", "Z"]
    name = tagged_repo(client, tags)
    listed = client.get(f"/v2/{name}/tags/list").json()["tags"]
    assert listed == sorted(tags, key=lambda t: t.encode())


def test_list_tags_unknown_repository_is_404(client: httpx.Client) -> None:
    """end-8a failure: 404; NAME_UNKNOWN 'repository name not known to registry'."""
    assert_error(client.get(f"/v2/{repo_name()}/tags/list"), 404, "NAME_UNKNOWN")


def test_list_tags_of_repository_with_only_untagged_manifests(client: httpx.Client) -> None:
    """'The list of tags MAY be empty if there are no tags on the repository.'"""
    name = repo_name()
    push_image(client, name)
    r = client.get(f"/v2/{name}/tags/list")
    assert r.status_code == 200
    assert r.json()["tags"] == []


def test_list_tags_after_all_tags_deleted(client: httpx.Client) -> None:
    name = tagged_repo(client, ["only"])
    assert client.delete(f"/v2/{name}/manifests/only").status_code == 202
    r = client.get(f"/v2/{name}/tags/list")
    assert r.status_code in (200, 404)
    if r.status_code == 200:
        assert r.json()["tags"] in ([], None)


def test_list_tags_invalid_name_is_400(client: httpx.Client) -> None:
    assert_error(client.get("/v2/Bad_Name-/tags/list"), 400, "NAME_INVALID")


def test_n_limits_results_with_link(client: httpx.Client) -> None:
    """'the response MUST include <int> results' unless fewer remain; 'A Link header MAY be
    included ... If included, the Link header MUST be set according to RFC 5988 with
    rel="next"'."""
    tags = [f"t{i}" for i in range(5)]
    name = tagged_repo(client, tags)
    r = client.get(f"/v2/{name}/tags/list", params={"n": 2})
    assert r.status_code == 200
    assert r.json() == {"name": name, "tags": ["t0", "t1"]}
    link = parse_link(r.headers["Link"])
    assert link.startswith(f"/v2/{name}/tags/list?")
    assert httpx.URL(link).params["n"] == "2"
    assert httpx.URL(link).params["last"] == "t1"
    following = client.get(link)
    assert following.json()["tags"] == ["t2", "t3"]


def test_no_link_when_no_more_tags(client: httpx.Client) -> None:
    name = tagged_repo(client, ["a", "b", "c"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": 3})
    assert r.json()["tags"] == ["a", "b", "c"]
    assert "Link" not in r.headers
    r = client.get(f"/v2/{name}/tags/list", params={"n": 10})
    assert r.json()["tags"] == ["a", "b", "c"]
    assert "Link" not in r.headers


def test_n_zero_returns_empty_list_without_link(client: httpx.Client) -> None:
    """'When n is zero, this endpoint MUST return an empty list, and MUST NOT include a Link
    header.'"""
    name = tagged_repo(client, ["a", "b"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": 0})
    assert r.status_code == 200
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


def test_last_is_exclusive(client: httpx.Client) -> None:
    """'<tagname> will not be included in the results, but up to <int> tags after <tagname>'."""
    name = tagged_repo(client, ["a", "b", "c", "d", "e"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"]


def test_last_without_n(client: httpx.Client) -> None:
    """'When using the last query parameter, the n parameter is OPTIONAL.'"""
    name = tagged_repo(client, ["a", "b", "c", "d"])
    r = client.get(f"/v2/{name}/tags/list", params={"last": "b"})
    assert r.status_code == 200
    assert r.json()["tags"] == ["c", "d"]


def test_last_not_an_existing_tag(client: httpx.Client) -> None:
    """`last` is a position in the sorted list, it need not be an existing tag."""
    name = tagged_repo(client, ["a", "c", "e"])
    r = client.get(f"/v2/{name}/tags/list", params={"last": "b"})
    assert r.json()["tags"] == ["c", "e"]


def test_last_after_every_tag_is_empty(client: httpx.Client) -> None:
    name = tagged_repo(client, ["a", "b"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": 5, "last": "z"})
    assert r.status_code == 200
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


def test_follow_links_collects_every_tag(client: httpx.Client) -> None:
    """Pagination: 'clients should prefer the Link header'; following it yields every tag once."""
    tags = [f"tag-{i:02d}" for i in range(25)]
    name = tagged_repo(client, tags)
    collected: list[str] = []
    url: str | None = f"/v2/{name}/tags/list?n=7"
    pages = 0
    while url is not None:
        r = client.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert len(page) <= 7
        collected += page
        pages += 1
        url = parse_link(r.headers["Link"]) if "Link" in r.headers else None
        assert pages <= 10
    assert collected == tags
    assert pages == 4


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "0x10"])
def test_invalid_n_is_400(client: httpx.Client, n: str) -> None:
    """Docker API V2 'Tags Paginated': 'On Failure: Invalid pagination number' - 400, with an
    OCI error code ('The code field MUST be one of the following')."""
    name = tagged_repo(client, ["a"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": n})
    assert r.status_code == 400, (r.status_code, r.text)
    assert set(error_codes(r)) <= SPEC_ERROR_CODES


def test_huge_n_returns_everything(client: httpx.Client) -> None:
    name = tagged_repo(client, ["a", "b"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": str(10**30)})
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json()["tags"] == ["a", "b"]
        assert "Link" not in r.headers


def test_tags_list_reflects_retag_and_delete(client: httpx.Client) -> None:
    name = tagged_repo(client, ["a", "b"])
    push_image(client, name, "c")
    push_image(client, name, "a")
    assert client.delete(f"/v2/{name}/manifests/b").status_code == 202
    assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["a", "c"]


def test_no_link_when_page_ends_exactly_at_last_tag(client: httpx.Client) -> None:
    """The Link header signals 'additional tags are available' - not when the page is the end."""
    name = tagged_repo(client, ["a", "b", "c", "d"])
    r = client.get(f"/v2/{name}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"]
    assert "Link" not in r.headers
