"""Pulling blobs (end-2), checking existence with HEAD, Range requests, deleting blobs (end-10)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import (
    assert_error,
    digest_of,
    get_blob,
    push_blob,
    random_blob,
    repo_name,
)

UNKNOWN_DIGEST = "sha256:" + "0" * 64


def test_get_blob_returns_exact_bytes(client: httpx.Client) -> None:
    """Pulling blobs: 'A GET request to an existing blob URL MUST provide the expected blob, with
    a response code that MUST be 200 OK'."""
    name = repo_name()
    data, digest = push_blob(client, name, random_blob(4096))
    r = client.get(f"/v2/{name}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data


def test_get_blob_headers(client: httpx.Client) -> None:
    """'A successful response MUST contain the digest of the uploaded blob in the header
    Docker-Content-Digest' and its value 'MUST be a digest matching that of the response body'."""
    name = repo_name()
    data, digest = push_blob(client, name)
    r, content = get_blob(client, name, digest)
    assert r.headers["Docker-Content-Digest"] == digest
    assert digest_of(content) == r.headers["Docker-Content-Digest"]
    assert content == data
    if r.status_code == 200:  # not redirected to object storage
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.headers["Content-Type"] == "application/octet-stream"


def test_head_blob(client: httpx.Client) -> None:
    """Checking if content exists: HEAD 'MUST return 200 OK', with Docker-Content-Digest and
    'the size in bytes ... in the header Content-Length'."""
    name = repo_name()
    data, digest = push_blob(client, name, random_blob(1000))
    r = client.head(f"/v2/{name}/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(data))
    assert r.content == b""


def test_get_empty_blob(client: httpx.Client) -> None:
    """A zero-length blob is a blob like any other."""
    name = repo_name()
    _, digest = push_blob(client, name, b"")
    r, content = get_blob(client, name, digest)
    assert content == b""
    assert r.headers["Docker-Content-Digest"] == digest


def test_get_unknown_blob_is_404(client: httpx.Client) -> None:
    """'If the blob is not found in the repository, the response code MUST be 404 Not Found'."""
    name = repo_name()
    push_blob(client, name)
    r = client.get(f"/v2/{name}/blobs/{UNKNOWN_DIGEST}")
    assert_error(r, 404, "BLOB_UNKNOWN")


def test_head_unknown_blob_is_404(client: httpx.Client) -> None:
    name = repo_name()
    push_blob(client, name)
    r = client.head(f"/v2/{name}/blobs/{UNKNOWN_DIGEST}")
    assert r.status_code == 404
    assert r.content == b""


def test_get_blob_in_unknown_repository_is_404(client: httpx.Client) -> None:
    r = client.get(f"/v2/{repo_name()}/blobs/{UNKNOWN_DIGEST}")
    assert r.status_code == 404


def test_blob_of_another_repository_is_404(client: httpx.Client) -> None:
    """Blobs are scoped to a repository: 'If the blob is not found in the repository ... 404'."""
    name = repo_name()
    _, digest = push_blob(client, name)
    other = repo_name()
    push_blob(client, other)
    assert client.get(f"/v2/{other}/blobs/{digest}").status_code == 404
    assert client.head(f"/v2/{other}/blobs/{digest}").status_code == 404


@pytest.mark.parametrize(
    "bad_digest",
    [
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
        "sha256:" + "Z" * 64,
        "sha256:" + "A" * 64,
        "sha512:" + "0" * 64,
    ],
)
def test_get_blob_malformed_digest_is_400(client: httpx.Client, bad_digest: str) -> None:
    """A digest that is not a valid digest of a supported algorithm: 400 DIGEST_INVALID."""
    name = repo_name()
    push_blob(client, name)
    r = client.get(f"/v2/{name}/blobs/{bad_digest}")
    assert_error(r, 400, "DIGEST_INVALID")


def test_head_blob_malformed_digest_is_400(client: httpx.Client) -> None:
    name = repo_name()
    push_blob(client, name)
    assert client.head(f"/v2/{name}/blobs/sha256:abc").status_code == 400


# --- Range requests: "A registry SHOULD support the Range request header (RFC 9110 section 14)"


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),  # open-ended
        ("bytes=-5", 995, 999),  # suffix
        ("bytes=50-5000", 50, 999),  # RFC 9110 14.1.1: last-pos past the end means the end
    ],
)
def test_range_request_returns_206(
    client: httpx.Client, range_header: str, first: int, last: int
) -> None:
    name = repo_name()
    data, digest = push_blob(client, name, random_blob(1000))
    r = client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": range_header})
    assert r.status_code == 206
    assert r.content == data[first : last + 1]
    assert r.headers["Content-Range"] == f"bytes {first}-{last}/1000"
    assert r.headers["Content-Length"] == str(last - first + 1)


def test_resumable_pull_by_ranges_reassembles_the_blob(client: httpx.Client) -> None:
    """Use case 'Resumable Pull': the client uses Range requests to continue a download."""
    name = repo_name()
    data, digest = push_blob(client, name, random_blob(10_000))
    parts = []
    for start in range(0, len(data), 3000):
        end = min(start + 2999, len(data) - 1)
        r = client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": f"bytes={start}-{end}"})
        assert r.status_code == 206
        parts.append(r.content)
    assert b"".join(parts) == data


def test_unsatisfiable_range_is_416(client: httpx.Client) -> None:
    """RFC 9110 15.5.17: a range starting past the end is 416 with `Content-Range: bytes */len`."""
    name = repo_name()
    _, digest = push_blob(client, name, random_blob(100))
    r = client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=100-200"})
    assert r.status_code == 416
    assert r.headers.get("Content-Range") == "bytes */100"


def test_unparseable_range_is_ignored_or_rejected(client: httpx.Client) -> None:
    """RFC 9110 14.2: a server MAY ignore a Range header it does not understand (full 200)."""
    name = repo_name()
    data, digest = push_blob(client, name, random_blob(100))
    r = client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": "pages=1-2"})
    assert r.status_code in (200, 416)
    if r.status_code == 200:
        assert r.content == data


# --- Deleting blobs (end-10)


def test_delete_blob_returns_202_then_404(client: httpx.Client) -> None:
    """Deleting Blobs: 'Upon success, the registry MUST respond with code 202 Accepted'."""
    name = repo_name()
    _, digest = push_blob(client, name)
    r = client.delete(f"/v2/{name}/blobs/{digest}")
    assert r.status_code == 202
    assert_error(client.get(f"/v2/{name}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{name}/blobs/{digest}").status_code == 404


def test_delete_unknown_blob_is_404(client: httpx.Client) -> None:
    """'If the blob is not found, a 404 Not Found code MUST be returned'."""
    name = repo_name()
    push_blob(client, name)
    assert_error(client.delete(f"/v2/{name}/blobs/{UNKNOWN_DIGEST}"), 404, "BLOB_UNKNOWN")


def test_delete_blob_twice_is_404(client: httpx.Client) -> None:
    name = repo_name()
    _, digest = push_blob(client, name)
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
    assert_error(client.delete(f"/v2/{name}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_delete_blob_only_affects_that_repository(client: httpx.Client) -> None:
    name, other = repo_name(), repo_name()
    data = random_blob()
    _, digest = push_blob(client, name, data)
    push_blob(client, other, data)
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
    r = client.get(f"/v2/{other}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data


def test_delete_blob_malformed_digest_is_400(client: httpx.Client) -> None:
    name = repo_name()
    push_blob(client, name)
    assert_error(client.delete(f"/v2/{name}/blobs/sha256:abc"), 400, "DIGEST_INVALID")


def test_blob_can_be_pushed_again_after_delete(client: httpx.Client) -> None:
    name = repo_name()
    data, digest = push_blob(client, name)
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
    push_blob(client, name, data)
    assert client.get(f"/v2/{name}/blobs/{digest}").content == data
