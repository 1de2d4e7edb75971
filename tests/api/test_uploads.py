"""Pushing blobs: POST/PUT monolithic (end-4a, end-6), single POST (end-4b), chunked PATCH
(end-5), upload status (end-13), cancel (end-14), digest-algorithm (end-4c), mount (end-11)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.helpers import (
    assert_error,
    digest_of,
    get_blob,
    location_url,
    push_blob,
    random_blob,
    repo_name,
    start_upload,
    with_query,
)
from tests.server import RegistryProcess

OCTET = {"Content-Type": "application/octet-stream"}


def patch_chunk(
    client: httpx.Client, location: str, chunk: bytes, start: int | None
) -> httpx.Response:
    headers = dict(OCTET)
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
    return client.patch(location_url(location), content=chunk, headers=headers)


def assert_pullable(client: httpx.Client, name: str, digest: str, data: bytes) -> None:
    r = client.get(f"/v2/{name}/blobs/{digest}")
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.content == data


# --- POST: obtaining a session


def test_post_starts_session_202_with_location(client: httpx.Client) -> None:
    """POST then PUT: 'the response MUST have a code of 202 Accepted, and MUST include the
    Location header'; the location 'MUST contain a UUID representing a unique session ID'."""
    name = repo_name()
    r = client.post(f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202
    location = r.headers["Location"]
    assert location_url(location).startswith(f"/v2/{name}/blobs/uploads/")
    upload_id = r.headers["Docker-Upload-UUID"]
    assert upload_id in location
    assert r.headers["Range"] in ("0-0", "bytes=0-0")


def test_post_sessions_are_unique(client: httpx.Client) -> None:
    name = repo_name()
    locations = {start_upload(client, name) for _ in range(5)}
    assert len(locations) == 5


# --- Monolithic POST then PUT


def test_monolithic_put_201(client: httpx.Client) -> None:
    """'Upon successful completion of the request, the response MUST have code 201 Created and
    MUST have the Location header', a pullable blob URL."""
    name = repo_name()
    data = random_blob(5000)
    digest = digest_of(data)
    location = start_upload(client, name)
    r = client.put(with_query(location, digest=digest), content=data, headers=OCTET)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
    assert location_url(r.headers["Location"]) == f"/v2/{name}/blobs/{digest}"
    pulled = client.get(location_url(r.headers["Location"]))
    assert pulled.status_code == 200
    assert pulled.content == data


def test_session_is_gone_after_completion(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob()
    location = start_upload(client, name)
    r = client.put(with_query(location, digest=digest_of(data)), content=data, headers=OCTET)
    assert r.status_code == 201
    assert_error(client.get(location_url(location)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_put_with_wrong_digest_is_400_and_nothing_stored(client: httpx.Client) -> None:
    """'if the client provided digest is invalid ... the registry SHOULD respond with 400';
    DIGEST_INVALID = 'provided digest did not match uploaded content'."""
    name = repo_name()
    data = random_blob()
    wrong = digest_of(b"something else")
    location = start_upload(client, name)
    r = client.put(with_query(location, digest=wrong), content=data, headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{name}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{name}/blobs/{digest_of(data)}").status_code == 404
    assert_error(client.get(location_url(location)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_put_without_digest_is_400(client: httpx.Client) -> None:
    """'The closing PUT request MUST include the <digest> of the whole blob'."""
    name = repo_name()
    location = start_upload(client, name)
    r = client.put(location_url(location), content=b"abc", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "junk"])
def test_put_with_malformed_digest_is_400(client: httpx.Client, bad: str) -> None:
    """'if the client provided digest is invalid or uses an unsupported algorithm, the registry
    SHOULD respond with a response code 400 Bad Request'."""
    name = repo_name()
    location = start_upload(client, name)
    r = client.put(with_query(location, digest=bad), content=b"abc", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")


def test_put_to_unknown_session_is_404(client: httpx.Client) -> None:
    """Docker API V2: 'If the upload uuid is unknown to the registry, a 404 Not Found'."""
    name = repo_name()
    data = random_blob()
    r = client.put(
        f"/v2/{name}/blobs/uploads/3f1e9a1c-0000-4000-8000-000000000000",
        params={"digest": digest_of(data)},
        content=data,
        headers=OCTET,
    )
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("upload_id", ["garbage", "...", "0" * 300, "%00", "a b"])
def test_garbage_upload_id_is_404(client: httpx.Client, upload_id: str) -> None:
    name = repo_name()
    r = client.get(f"/v2/{name}/blobs/uploads/{upload_id}")
    assert r.status_code in (400, 404), (r.status_code, r.text)
    if r.status_code == 404:
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_upload_id_under_other_repository_is_404(client: httpx.Client) -> None:
    """A session belongs to the repository it was started in."""
    name, other = repo_name(), repo_name()
    location = location_url(start_upload(client, name))
    foreign = location.replace(f"/v2/{name}/", f"/v2/{other}/")
    assert foreign != location
    assert_error(client.get(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    data = random_blob()
    r = client.put(with_query(foreign, digest=digest_of(data)), content=data, headers=OCTET)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.get(location).status_code == 204


def test_monolithic_upload_of_empty_blob(client: httpx.Client) -> None:
    name = repo_name()
    location = start_upload(client, name)
    digest = digest_of(b"")
    r = client.put(with_query(location, digest=digest), content=b"", headers=OCTET)
    assert r.status_code == 201
    assert_pullable(client, name, digest, b"")


def test_upload_of_existing_blob_succeeds(client: httpx.Client) -> None:
    """Use case 'Layer Upload De-duplication': pushing the same content twice is fine."""
    name = repo_name()
    data, digest = push_blob(client, name)
    push_blob(client, name, data)
    assert_pullable(client, name, digest, data)


def test_large_monolithic_upload(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(5 * 1024 * 1024 + 17)
    _, digest = push_blob(client, name, data)
    assert_pullable(client, name, digest, data)


# --- Single POST (end-4b)


def test_single_post_upload_201(client: httpx.Client) -> None:
    """Single POST: 'Successful completion of the request MUST return a 201 Created and MUST
    include the Location header'."""
    name = repo_name()
    data = random_blob(3000)
    digest = digest_of(data)
    r = client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data, headers=OCTET
    )
    assert r.status_code == 201
    assert location_url(r.headers["Location"]) == f"/v2/{name}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert_pullable(client, name, digest, data)


def test_single_post_wrong_digest_is_400(client: httpx.Client) -> None:
    """Single POST: 'the <digest> MUST match the blob's digest'."""
    name = repo_name()
    data = random_blob()
    wrong = digest_of(b"nope")
    r = client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": wrong}, content=data, headers=OCTET
    )
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{name}/blobs/{wrong}").status_code == 404


def test_single_post_malformed_digest_is_400(client: httpx.Client) -> None:
    name = repo_name()
    r = client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": "sha256:xyz"}, content=b"x", headers=OCTET
    )
    assert_error(r, 400, "DIGEST_INVALID")


# --- Chunked upload (end-5)


def test_chunked_upload_with_content_range(client: httpx.Client) -> None:
    """'The response for each successful chunk upload MUST be 202 Accepted, and MUST have the
    headers Location and Range: 0-<end-of-range>'."""
    name = repo_name()
    data = random_blob(3000)
    location = start_upload(client, name)
    for start in range(0, 3000, 1000):
        r = patch_chunk(client, location, data[start : start + 1000], start)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{start + 999}"
        location = r.headers["Location"]
    digest = digest_of(data)
    r = client.put(with_query(location, digest=digest))
    assert r.status_code == 201, r.text
    assert location_url(r.headers["Location"]) == f"/v2/{name}/blobs/{digest}"
    assert_pullable(client, name, digest, data)


def test_chunked_upload_streamed_without_content_range(client: httpx.Client) -> None:
    """PATCH without Content-Range appends (Docker streamed upload)."""
    name = repo_name()
    data = random_blob(2500)
    location = start_upload(client, name)
    for start in range(0, 2500, 1000):
        r = patch_chunk(client, location, data[start : start + 1000], None)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{min(start + 1000, 2500) - 1}"
        location = r.headers["Location"]
    digest = digest_of(data)
    assert client.put(with_query(location, digest=digest)).status_code == 201
    assert_pullable(client, name, digest, data)


def test_content_range_with_bytes_prefix(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(200)
    location = start_upload(client, name)
    r = client.patch(
        location_url(location),
        content=data[:100],
        headers={**OCTET, "Content-Range": "bytes=0-99"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-99"
    r = patch_chunk(client, r.headers["Location"], data[100:], 100)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-199"
    assert client.put(with_query(r.headers["Location"], digest=digest_of(data))).status_code == 201


def test_many_chunk_upload_across_workers(client: httpx.Client) -> None:
    """Chunks of one session may reach any worker process; the session must stay consistent."""
    name = repo_name()
    data = random_blob(40 * 257)
    location = start_upload(client, name)
    for start in range(0, len(data), 257):
        r = patch_chunk(client, location, data[start : start + 257], start)
        assert r.status_code == 202, (start, r.text)
        assert r.headers["Range"] == f"0-{start + 256}"
        location = r.headers["Location"]
    digest = digest_of(data)
    assert client.put(with_query(location, digest=digest)).status_code == 201
    assert_pullable(client, name, digest, data)


def test_final_chunk_in_put_body(client: httpx.Client) -> None:
    """'The final chunk MAY be uploaded using a PATCH request or it MAY be uploaded in the
    closing PUT request.'"""
    name = repo_name()
    data = random_blob(2000)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:1200], 0)
    assert r.status_code == 202
    digest = digest_of(data)
    r = client.put(with_query(r.headers["Location"], digest=digest), content=data[1200:])
    assert r.status_code == 201, r.text
    assert_pullable(client, name, digest, data)


def test_final_chunk_in_put_body_with_content_range(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(2000)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:1200], 0)
    assert r.status_code == 202
    digest = digest_of(data)
    r = client.put(
        with_query(r.headers["Location"], digest=digest),
        content=data[1200:],
        headers={**OCTET, "Content-Range": "1200-1999"},
    )
    assert r.status_code == 201, r.text
    assert_pullable(client, name, digest, data)


def test_final_put_out_of_order_is_416(client: httpx.Client) -> None:
    """'If the final chunk is uploaded out of order, the registry MUST respond with a 416'."""
    name = repo_name()
    data = random_blob(2000)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:1000], 0)
    assert r.status_code == 202
    r = client.put(
        with_query(r.headers["Location"], digest=digest_of(data)),
        content=data[1500:],
        headers={**OCTET, "Content-Range": "1500-1999"},
    )
    assert r.status_code == 416, r.text


def test_first_chunk_must_start_at_zero(client: httpx.Client) -> None:
    """'The first chunk's range MUST begin with 0' - otherwise out of order: 416."""
    name = repo_name()
    location = start_upload(client, name)
    r = patch_chunk(client, location, b"x" * 10, 5)
    assert r.status_code == 416
    assert r.headers["Range"] in ("0-0", "bytes=0-0")


def test_out_of_order_chunk_is_416_with_range(client: httpx.Client) -> None:
    """'If a chunk is uploaded out of order, the registry MUST respond with a 416'; Docker API V2:
    the 416 'will include a Range header indicating the current status'."""
    name = repo_name()
    data = random_blob(300)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:100], 0)
    assert r.status_code == 202
    location = r.headers["Location"]
    r = patch_chunk(client, location, data[200:], 200)
    assert r.status_code == 416
    assert r.headers["Range"] == "0-99"
    assert "BLOB_UPLOAD_INVALID" in r.text


def test_overlapping_chunk_is_416(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(300)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:100], 0)
    assert r.status_code == 202
    r = patch_chunk(client, r.headers["Location"], data[50:150], 50)
    assert r.status_code == 416
    assert r.headers["Range"] == "0-99"


def test_upload_continues_after_416(client: httpx.Client) -> None:
    """'To get the current status after a 416 error, issue a GET request' and resume from it."""
    name = repo_name()
    data = random_blob(300)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:100], 0)
    location = r.headers["Location"]
    assert patch_chunk(client, location, data[150:], 150).status_code == 416
    status = client.get(location_url(location))
    assert status.status_code == 204
    end = int(status.headers["Range"].removeprefix("bytes=").split("-")[1])
    r = patch_chunk(client, status.headers["Location"], data[end + 1 :], end + 1)
    assert r.status_code == 202
    digest = digest_of(data)
    assert client.put(with_query(r.headers["Location"], digest=digest)).status_code == 201
    assert_pullable(client, name, digest, data)


def test_content_range_length_mismatch_is_416(client: httpx.Client) -> None:
    """A Content-Range whose length disagrees with the body (Content-Length) is rejected."""
    name = repo_name()
    location = start_upload(client, name)
    r = client.patch(
        location_url(location), content=b"x" * 10, headers={**OCTET, "Content-Range": "0-19"}
    )
    assert r.status_code == 416, r.text


def test_invalid_content_range_format_is_rejected(client: httpx.Client) -> None:
    """Range 'MUST match ^[0-9]+-[0-9]+$'; Docker API V2: 'A 416 will be returned under the
    following conditions: Invalid Content-Range header format'."""
    name = repo_name()
    location = start_upload(client, name)
    r = client.patch(
        location_url(location), content=b"x" * 10, headers={**OCTET, "Content-Range": "zero-9"}
    )
    assert r.status_code in (400, 416), r.text


# --- Upload status (end-13) and cancel (end-14)


def test_get_upload_status_204(client: httpx.Client) -> None:
    """'The response to an active upload <blob-push-location> MUST be a 204 No Content response
    code, and MUST have the headers Location and Range: 0-<end-of-range>'."""
    name = repo_name()
    location = start_upload(client, name)
    r = patch_chunk(client, location, b"y" * 123, 0)
    assert r.status_code == 202
    r = client.get(location_url(r.headers["Location"]))
    assert r.status_code == 204
    assert r.headers["Range"] == "0-122"
    assert location_url(r.headers["Location"]).startswith(f"/v2/{name}/blobs/uploads/")


def test_get_status_of_fresh_session(client: httpx.Client) -> None:
    name = repo_name()
    location = start_upload(client, name)
    r = client.get(location_url(location))
    assert r.status_code == 204
    assert r.headers["Range"] in ("0-0", "bytes=0-0")
    assert "Location" in r.headers


def test_cancel_upload_204_then_404(client: httpx.Client) -> None:
    """Cancel: 'If successful, the response SHOULD be a 204 No Content'; Docker API V2: 'After
    this request is issued, the upload uuid will no longer be valid'."""
    name = repo_name()
    location = location_url(start_upload(client, name))
    assert patch_chunk(client, location, b"abc", 0).status_code == 202
    r = client.delete(location)
    assert r.status_code == 204
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(client, location, b"def", 3), 404, "BLOB_UPLOAD_UNKNOWN")
    r = client.put(with_query(location, digest=digest_of(b"abc")))
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_cancel_unknown_upload_is_404(client: httpx.Client) -> None:
    name = repo_name()
    r = client.delete(f"/v2/{name}/blobs/uploads/3f1e9a1c-0000-4000-8000-000000000000")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_patch_unknown_upload_is_404(client: httpx.Client) -> None:
    """end-5 failure: 404."""
    name = repo_name()
    r = client.patch(
        f"/v2/{name}/blobs/uploads/3f1e9a1c-0000-4000-8000-000000000000",
        content=b"abc",
        headers=OCTET,
    )
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_failed_digest_after_chunks_discards_session(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(500)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data, 0)
    wrong = digest_of(b"different")
    r = client.put(with_query(r.headers["Location"], digest=wrong))
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{name}/blobs/{digest_of(data)}").status_code == 404
    assert client.get(location_url(location)).status_code == 404


# --- Other digest algorithms (end-4c)


def test_sha512_chunked_upload_with_digest_algorithm(client: httpx.Client) -> None:
    """'When pushing a blob with a digest algorithm other than sha256, the post request SHOULD
    include the digest-algorithm parameter'; the blob is then addressable by that digest."""
    name = repo_name()
    data = random_blob(3000)
    location = start_upload(client, name, **{"digest-algorithm": "sha512"})
    for start in range(0, 3000, 1000):
        r = patch_chunk(client, location, data[start : start + 1000], start)
        assert r.status_code == 202
        location = r.headers["Location"]
    digest = digest_of(data, "sha512")
    r = client.put(with_query(location, digest=digest))
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    pulled, content = get_blob(client, name, digest)
    assert content == data
    assert pulled.headers["Docker-Content-Digest"] == digest


def test_sha512_put_without_digest_algorithm(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(700)
    location = start_upload(client, name)
    digest = digest_of(data, "sha512")
    r = client.put(with_query(location, digest=digest), content=data, headers=OCTET)
    assert r.status_code == 201, r.text
    assert_pullable(client, name, digest, data)


def test_sha512_single_post(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(700)
    digest = digest_of(data, "sha512")
    r = client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data, headers=OCTET
    )
    assert r.status_code == 201, r.text
    assert_pullable(client, name, digest, data)


def test_unsupported_digest_algorithm_is_400(client: httpx.Client) -> None:
    """end-4c failure: 400 for an algorithm the registry does not support."""
    name = repo_name()
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest-algorithm": "md5"})
    assert_error(r, 400, "DIGEST_INVALID")


def test_sha512_wrong_digest_is_400(client: httpx.Client) -> None:
    name = repo_name()
    location = start_upload(client, name, **{"digest-algorithm": "sha512"})
    r = client.put(
        with_query(location, digest=digest_of(b"other", "sha512")), content=b"data", headers=OCTET
    )
    assert_error(r, 400, "DIGEST_INVALID")


# --- Cross-repository mount (end-11)


def test_mount_from_repository_201(client: httpx.Client) -> None:
    """Mount: 'The response to a successful mount MUST be 201 Created, and MUST contain the
    Location header'."""
    source, target = repo_name(), repo_name()
    data, digest = push_blob(client, source)
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 201, r.text
    assert location_url(r.headers["Location"]) == f"/v2/{target}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert_pullable(client, target, digest, data)


def test_mount_of_unknown_blob_starts_upload_202(client: httpx.Client) -> None:
    """'if a registry ... is unable to mount the requested blob, it SHOULD return a 202. This
    indicates that the upload session has begun'."""
    source, target = repo_name(), repo_name()
    push_blob(client, source)
    missing = digest_of(random_blob())
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": missing, "from": source})
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    assert location_url(location).startswith(f"/v2/{target}/blobs/uploads/")
    data = random_blob()
    r = client.put(with_query(location, digest=digest_of(data)), content=data, headers=OCTET)
    assert r.status_code == 201


def test_mount_from_repository_without_the_blob(client: httpx.Client) -> None:
    """The blob exists only in a third repository, not in `from`: either mounted (from is
    optional per spec) or a 202 session - never an error."""
    holder, source, target = repo_name(), repo_name(), repo_name()
    data, digest = push_blob(client, holder)
    push_blob(client, source)
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code in (201, 202), r.text
    if r.status_code == 201:
        assert_pullable(client, target, digest, data)


def test_mount_without_from_auto_mounts(client: httpx.Client) -> None:
    """'The registry MAY treat the from parameter as optional, and it MAY cross-mount the blob
    if it can be found' (cargobay: auto_mount, on by default)."""
    source, target = repo_name(), repo_name()
    data, digest = push_blob(client, source)
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201, r.text
    assert_pullable(client, target, digest, data)


def test_mount_without_from_of_unknown_blob_is_202(client: httpx.Client) -> None:
    target = repo_name()
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest_of(random_blob())})
    assert r.status_code == 202
    assert "Location" in r.headers


def test_mount_without_from_disabled_auto_mount_is_202(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    """With auto_mount off, a mount without `from` is 'unable to mount': 202 session."""
    server = start_registry(config={"registry": {"auto_mount": False}})
    with httpx.Client(base_url=server.url, timeout=60) as c:
        source, target = repo_name(), repo_name()
        _, digest = push_blob(c, source)
        r = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest})
        assert r.status_code == 202, r.text
        assert c.head(f"/v2/{target}/blobs/{digest}").status_code == 404
        r = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
        assert r.status_code == 201, r.text


def test_mount_with_malformed_digest(client: httpx.Client) -> None:
    """A mount that cannot be done: 202 session (fallback) or 400 - never a 500."""
    source, target = repo_name(), repo_name()
    push_blob(client, source)
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": "sha256:zz", "from": source})
    assert r.status_code in (202, 400), r.text


def test_mount_from_invalid_repository_name(client: httpx.Client) -> None:
    source, target = repo_name(), repo_name()
    _, digest = push_blob(client, source)
    r = client.post(
        f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": "Not/Valid//Name"}
    )
    assert r.status_code in (201, 202, 400), r.text
    if r.status_code == 400:
        assert_error(r, 400, "NAME_INVALID")


def test_upload_location_is_reusable_relative_url(client: httpx.Client) -> None:
    """The Location MAY be absolute or relative; here: relative, `/v2/<name>/blobs/uploads/...`."""
    name = repo_name()
    location = start_upload(client, name)
    assert re.match(rf"^(https?://[^/]+)?/v2/{name}/blobs/uploads/[^/?]+", location)


def test_interleaved_uploads_of_same_blob_both_succeed(client: httpx.Client) -> None:
    """Use case 'Layer Upload De-duplication': 'If process A and B upload the same layer at the
    same time, both operations will proceed'."""
    name = repo_name()
    data = random_blob(2000)
    digest = digest_of(data)
    a, b = start_upload(client, name), start_upload(client, name)
    a = patch_chunk(client, a, data[:1000], 0).headers["Location"]
    b = patch_chunk(client, b, data[:1000], 0).headers["Location"]
    assert client.put(with_query(a, digest=digest), content=data[1000:]).status_code == 201
    assert client.put(with_query(b, digest=digest), content=data[1000:]).status_code == 201
    assert_pullable(client, name, digest, data)


def test_patch_and_status_carry_upload_uuid(client: httpx.Client) -> None:
    """Docker API V2: responses to the upload url carry `Docker-Upload-UUID`."""
    name = repo_name()
    r = client.post(f"/v2/{name}/blobs/uploads/")
    upload_id = r.headers["Docker-Upload-UUID"]
    r = patch_chunk(client, r.headers["Location"], b"abc", 0)
    assert r.headers["Docker-Upload-UUID"] == upload_id
    assert upload_id in r.headers["Location"]
    assert (
        client.get(location_url(r.headers["Location"])).headers["Docker-Upload-UUID"] == upload_id
    )


def test_mixed_ranged_and_streamed_chunks(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(900)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:300], 0)
    r = patch_chunk(client, r.headers["Location"], data[300:600], None)
    assert r.headers["Range"] == "0-599"
    r = patch_chunk(client, r.headers["Location"], data[600:], 600)
    assert r.headers["Range"] == "0-899"
    digest = digest_of(data)
    assert client.put(with_query(r.headers["Location"], digest=digest)).status_code == 201
    assert_pullable(client, name, digest, data)


def test_final_put_content_range_length_mismatch_is_416(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob(200)
    location = start_upload(client, name)
    r = patch_chunk(client, location, data[:100], 0)
    r = client.put(
        with_query(r.headers["Location"], digest=digest_of(data)),
        content=data[100:],
        headers={**OCTET, "Content-Range": "100-149"},
    )
    assert r.status_code == 416, r.text
    assert client.head(f"/v2/{name}/blobs/{digest_of(data)}").status_code == 404


def test_single_post_of_empty_blob(client: httpx.Client) -> None:
    name = repo_name()
    digest = digest_of(b"")
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=b"")
    assert r.status_code in (201, 202), r.text
    if r.status_code == 202:
        r = client.put(with_query(r.headers["Location"], digest=digest))
        assert r.status_code == 201
    assert_pullable(client, name, digest, b"")


def test_mount_into_same_repository(client: httpx.Client) -> None:
    name = repo_name()
    data, digest = push_blob(client, name)
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"mount": digest, "from": name})
    assert r.status_code == 201, r.text
    assert_pullable(client, name, digest, data)


def test_mount_sha512_blob(client: httpx.Client) -> None:
    source, target = repo_name(), repo_name()
    data = random_blob()
    digest = digest_of(data, "sha512")
    location = start_upload(client, source)
    assert client.put(with_query(location, digest=digest), content=data).status_code == 201
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert_pullable(client, target, digest, data)


def test_mounted_blob_survives_delete_in_source(client: httpx.Client) -> None:
    """After a mount the blob belongs to the target repository too."""
    source, target = repo_name(), repo_name()
    data, digest = push_blob(client, source)
    r = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 201
    assert client.delete(f"/v2/{source}/blobs/{digest}").status_code == 202
    assert_pullable(client, target, digest, data)


def test_concurrent_chunks_for_the_same_range_one_wins(registry_server: RegistryProcess) -> None:
    """Two PATCHes racing for bytes 0-N of one session (on any workers): exactly one is
    accepted, the other gets 416, and the blob is exactly the winner's bytes, never a mix."""
    name = repo_name()
    bodies = [random_blob(4 << 20), random_blob(4 << 20)]
    with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True) as setup:
        location = start_upload(setup, name)
    barrier = threading.Barrier(2)

    def send(body: bytes) -> httpx.Response:
        with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True) as own:
            barrier.wait()
            return patch_chunk(own, location, body, 0)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(send, bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 416], [r.text for r in responses]
    winner = bodies[[r.status_code for r in responses].index(202)]
    with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True) as check:
        digest = digest_of(winner)
        r = check.put(with_query(location, digest=digest))
        assert r.status_code == 201, r.text
        assert_pullable(check, name, digest, winner)
