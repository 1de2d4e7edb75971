"""end-1 `GET /v2/` and behaviour common to every endpoint."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import (
    API_VERSION_HEADER,
    SPEC_ERROR_CODES,
    error_codes,
    get_blob,
    push_blob,
    repo_name,
)


def test_base_endpoint_returns_200(client: httpx.Client) -> None:
    """Determining Support: 'If the response is 200 OK, then the registry implements this spec'."""
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.json() == {}


def test_base_endpoint_head(client: httpx.Client) -> None:
    """API section: 'implementations SHOULD follow the HTTP semantics defined in RFC 9110', and
    RFC 9110 9.1 requires HEAD wherever GET is supported (debatable: end-1 lists only GET)."""
    r = client.head("/v2/")
    assert r.status_code == 200


def test_base_endpoint_sends_api_version_header(client: httpx.Client) -> None:
    """Docker API V2: 'the Docker-Distribution-API-Version header should be set to registry/2.0'."""
    r = client.get("/v2/")
    assert r.headers[API_VERSION_HEADER] == "registry/2.0"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/{name}/manifests/latest"),
        ("GET", "/v2/{name}/blobs/sha256:" + "0" * 64),
        ("GET", "/v2/{name}/tags/list"),
        ("GET", "/v2/_catalog"),
        ("POST", "/v2/{name}/blobs/uploads/"),
        ("GET", "/v2/{name}/referrers/sha256:" + "0" * 64),
        ("GET", "/v2/no/such/endpoint/at/all"),
    ],
)
def test_every_response_carries_api_version_header(
    client: httpx.Client, method: str, path: str
) -> None:
    """Successes and errors alike carry `Docker-Distribution-API-Version: registry/2.0`."""
    r = client.request(method, path.format(name=repo_name()))
    assert r.headers.get(API_VERSION_HEADER) == "registry/2.0", (r.status_code, r.headers)


def test_blob_pull_carries_api_version_header(client: httpx.Client) -> None:
    name = repo_name()
    _, digest = push_blob(client, name)
    r, _ = get_blob(client, name, digest)
    assert r.headers[API_VERSION_HEADER] == "registry/2.0"


def test_error_body_format(client: httpx.Client) -> None:
    """Error Codes: a JSON 4XX body is {"errors":[{"code","message","detail"}]} and `code` is
    one of the 14 codes of the table."""
    r = client.get(f"/v2/{repo_name()}/manifests/latest")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"errors"}
    for error in body["errors"]:
        assert set(error) <= {"code", "message", "detail"}
        assert error["code"] in SPEC_ERROR_CODES
        assert isinstance(error.get("message", ""), str)


def test_unknown_endpoint_is_404_json(client: httpx.Client) -> None:
    """Anything that is not an endpoint of the table: 404 with a JSON error body, never a 500."""
    r = client.get("/v2/some/repo/whatever/thing")
    assert r.status_code == 404
    assert all(code in SPEC_ERROR_CODES for code in error_codes(r))


def test_path_outside_v2_is_404(client: httpx.Client) -> None:
    r = client.get("/v3/")
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/{name}/manifests/latest"),
        ("PATCH", "/v2/{name}/manifests/latest"),
        ("POST", "/v2/{name}/tags/list"),
        ("PUT", "/v2/{name}/blobs/sha256:" + "0" * 64),
        ("POST", "/v2/_catalog"),
        ("DELETE", "/v2/"),
        ("PUT", "/v2/{name}/referrers/sha256:" + "0" * 64),
    ],
)
def test_wrong_method_is_404_or_405_json(client: httpx.Client, method: str, path: str) -> None:
    """A method the endpoint does not define: 404/405 with a spec-format JSON error body."""
    r = client.request(method, path.format(name=repo_name()))
    assert r.status_code in (404, 405), (r.status_code, r.text)
    assert all(code in SPEC_ERROR_CODES for code in error_codes(r))
