"""Hostile-but-plausible input: the registry answers with a 4xx and a spec-format error body,
never a 500 ('A 4XX response code from the registry MAY return a body in any format. If the
response body is in JSON format, it MUST have the following format ...')."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from tests.api.helpers import (
    OCI_MANIFEST,
    SPEC_ERROR_CODES,
    canonical,
    descriptor,
    digest_of,
    error_codes,
    image_manifest,
    location_url,
    push_blob,
    push_image,
    push_manifest,
    random_blob,
    repo_name,
    start_upload,
    with_query,
)
from tests.server import RegistryProcess

OCTET = {"Content-Type": "application/octet-stream"}


def assert_client_error(r: httpx.Response, *allowed: int) -> None:
    """A 4xx from `allowed` (any 4xx if none given), with spec codes if the body is JSON."""
    if allowed:
        assert r.status_code in allowed, (r.status_code, r.text[:300])
    else:
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.headers.get("Content-Type", "").startswith("application/json") and r.content:
        assert set(error_codes(r)) <= SPEC_ERROR_CODES, r.text


def valid_manifest(client: httpx.Client, name: str) -> dict[str, object]:
    config, _ = push_blob(client, name)
    layer, _ = push_blob(client, name)
    return image_manifest(config, [layer])


# --- Pagination parameters


@pytest.mark.parametrize("n", [str(2**63), str(10**40), "99999999999999999999999999"])
def test_huge_n_on_catalog(client: httpx.Client, n: str) -> None:
    r = client.get("/v2/_catalog", params={"n": n})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert_client_error(r, 400)


@pytest.mark.parametrize("n", [str(2**63), str(10**40)])
def test_huge_n_on_referrers(client: httpx.Client, n: str) -> None:
    name = repo_name()
    _, digest = push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/referrers/{digest}", params={"n": n})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])


@pytest.mark.parametrize("n", ["-1", "abc", "1e3"])
def test_bad_n_on_referrers(client: httpx.Client, n: str) -> None:
    name = repo_name()
    _, digest = push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/referrers/{digest}", params={"n": n})
    assert_client_error(r, 400)


@pytest.mark.parametrize(
    "last",
    ["\x00", "\uffff", "é" * 50, "x" * 10_000, "%", "../../etc/passwd", "' OR 1=1 --", "\n"],
)
def test_weird_last_on_tags(client: httpx.Client, last: str) -> None:
    name = repo_name()
    push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/tags/list", params={"last": last, "n": 5})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 200:
        tags = r.json()["tags"]
        assert tags == sorted(t for t in ["v1"] if t.encode() > last.encode())


@pytest.mark.parametrize("last", ["\x00", "x" * 10_000, "' OR 1=1 --", "a/../../b"])
def test_weird_last_on_catalog(client: httpx.Client, last: str) -> None:
    r = client.get("/v2/_catalog", params={"last": last, "n": 5})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert all(repo.encode() > last.encode() for repo in r.json()["repositories"])


# --- Upload sessions


def test_patch_to_finished_upload_is_404(client: httpx.Client) -> None:
    """A completed session no longer exists: BLOB_UPLOAD_UNKNOWN."""
    name = repo_name()
    data = random_blob()
    location = start_upload(client, name)
    r = client.put(with_query(location, digest=digest_of(data)), content=data, headers=OCTET)
    assert r.status_code == 201
    r = client.patch(location_url(location), content=b"more", headers=OCTET)
    assert_client_error(r, 404)
    assert "BLOB_UPLOAD_UNKNOWN" in error_codes(r)


def test_put_to_finished_upload_is_404(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob()
    location = start_upload(client, name)
    url = with_query(location, digest=digest_of(data))
    assert client.put(url, content=data, headers=OCTET).status_code == 201
    r = client.put(url, content=data, headers=OCTET)
    assert_client_error(r, 404)


@pytest.mark.parametrize(
    "content_range",
    [
        "garbage",
        "bytes=",
        "-",
        "0-",
        "-5",
        "5-3",
        "0-4-9",
        "a-b",
        "0--4",
        "99999999999999999999999999-99999999999999999999999999",
        "0-99999999999999999999999999",
        "0x0-0x4",
        "\uff10-\uff14",  # fullwidth digits
    ],
)
def test_content_range_garbage(client: httpx.Client, content_range: str) -> None:
    """Range 'MUST match ^[0-9]+-[0-9]+$'. Anything else is refused (400/416) and the session
    keeps its state."""
    name = repo_name()
    location = location_url(start_upload(client, name))
    r = client.patch(
        location,
        content=b"hello",
        headers={**OCTET, "Content-Range": content_range.encode("utf-8")},  # type: ignore[dict-item]
    )
    assert_client_error(r, 400, 416)
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] in ("0-0", "bytes=0-0")


def test_put_with_two_digest_parameters(client: httpx.Client) -> None:
    """Docker API V2: 'Multiple digest parameters may be provided ... The server may verify none
    or all of them but must notify the client if the content is rejected.'"""
    name = repo_name()
    data = random_blob()
    location = location_url(start_upload(client, name))
    r = client.put(
        location,
        params=[("digest", digest_of(data)), ("digest", digest_of(b"other"))],
        content=data,
        headers=OCTET,
    )
    assert r.status_code in (201, 400), (r.status_code, r.text)


def test_sha256_digest_on_sha512_session(client: httpx.Client) -> None:
    name = repo_name()
    data = random_blob()
    location = start_upload(client, name, **{"digest-algorithm": "sha512"})
    r = client.put(with_query(location, digest=digest_of(data)), content=data, headers=OCTET)
    assert r.status_code in (201, 400), (r.status_code, r.text)
    if r.status_code == 201:
        assert client.get(f"/v2/{name}/blobs/{digest_of(data)}").content == data


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "a" * 10_000,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "SHA256:" + "a" * 64,
        "sha256:" + "g" * 64,
        ":" + "a" * 64,
        "sha256:",
        "sha256::" + "a" * 64,
        "sha256:" + "a" * 64 + "%00",
        "sha256:" + "\uff41" * 64,  # fullwidth a
    ],
)
def test_malformed_digests_everywhere(client: httpx.Client, digest: str) -> None:
    name = repo_name()
    push_image(client, name, "v1")
    for method, path in [
        ("GET", f"/v2/{name}/blobs/{digest}"),
        ("DELETE", f"/v2/{name}/blobs/{digest}"),
        ("GET", f"/v2/{name}/manifests/{digest}"),
        ("GET", f"/v2/{name}/referrers/{digest}"),
    ]:
        r = client.request(method, path)
        assert_client_error(r, 400, 404)


def test_very_long_repository_name(client: httpx.Client) -> None:
    """Docker API V2: 'The total length of a repository name ... must be less than 256'; either
    refused with NAME_INVALID or accepted, never a 500."""
    name = "/".join(["abcdefghij"] * 40)
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code in (202, 400, 404, 414), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert "NAME_INVALID" in error_codes(r)


@pytest.mark.parametrize("tag", ["a%00b", "t%C3%A9", "%2F", "a%0Ab"])
def test_percent_encoded_junk_in_tag(client: httpx.Client, tag: str) -> None:
    name = repo_name()
    push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/manifests/{tag}")
    assert_client_error(r, 400, 404)


# --- Manifests


def test_descriptor_with_unknown_digest_algorithm(client: httpx.Client) -> None:
    """image-spec: unrecognised algorithms that match the digest grammar may pass validation, but
    the blob cannot exist here: MANIFEST_BLOB_UNKNOWN or MANIFEST_INVALID."""
    name = repo_name()
    manifest = valid_manifest(client, name)
    manifest["layers"][0]["digest"] = "foo+bar:" + "a" * 64  # type: ignore[index]
    r = push_manifest(client, name, "v1", manifest, expect=None)
    assert_client_error(r, 400)
    assert set(error_codes(r)) & {"MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID"}


def test_subject_with_unknown_digest_algorithm(client: httpx.Client) -> None:
    name = repo_name()
    manifest = valid_manifest(client, name)
    manifest["subject"] = {"mediaType": OCI_MANIFEST, "digest": "blake9:" + "a" * 64, "size": 10}
    r = push_manifest(client, name, "v1", manifest, expect=None)
    assert r.status_code in (201, 400), (r.status_code, r.text)


def test_deeply_nested_json(client: httpx.Client) -> None:
    name = repo_name()
    manifest = valid_manifest(client, name)
    body = canonical(manifest)[:-1] + b',"deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = push_manifest(client, name, "deep", body, expect=None)
    assert_client_error(r, 400)
    assert "MANIFEST_INVALID" in error_codes(r)


def test_deeply_nested_objects_in_annotations(client: httpx.Client) -> None:
    name = repo_name()
    manifest = valid_manifest(client, name)
    body = canonical(manifest)[:-1] + b',"annotations":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001
    r = push_manifest(client, name, "deep", body, expect=None)
    assert_client_error(r, 400)


def test_non_utf8_body(client: httpx.Client) -> None:
    name = repo_name()
    body = b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'","x":"\xff\xfe\xc3"}'
    r = push_manifest(client, name, "v1", body, expect=None)
    assert_client_error(r, 400)
    assert "MANIFEST_INVALID" in error_codes(r)


def test_binary_garbage_body(client: httpx.Client) -> None:
    name = repo_name()
    r = push_manifest(client, name, "v1", random_blob(4096), expect=None)
    assert_client_error(r, 400)


def test_nan_and_infinity_are_not_json(client: httpx.Client) -> None:
    """RFC 8259 has no NaN/Infinity: such a body is not a valid manifest."""
    name = repo_name()
    manifest = valid_manifest(client, name)
    body = canonical(manifest).replace(b'"schemaVersion":2', b'"schemaVersion":NaN')
    assert_client_error(push_manifest(client, name, "v1", body, expect=None), 400)
    size = str(manifest["config"]["size"]).encode()  # type: ignore[index]
    body = canonical(manifest).replace(b'"size":' + size, b'"size":Infinity', 1)
    assert_client_error(push_manifest(client, name, "v2", body, expect=None), 400)


def test_size_beyond_int64(client: httpx.Client) -> None:
    """image-spec: `size` is an int64; a larger number is a schema violation."""
    name = repo_name()
    manifest = valid_manifest(client, name)
    manifest["config"]["size"] = 2**70  # type: ignore[index]
    r = push_manifest(client, name, "v1", manifest, expect=None)
    assert_client_error(r, 400)
    assert "MANIFEST_INVALID" in error_codes(r)


def test_duplicate_keys_do_not_confuse_the_registry(client: httpx.Client) -> None:
    """A body whose mediaType key appears twice: rejected, or stored and served byte-exact."""
    name = repo_name()
    manifest = valid_manifest(client, name)
    body = canonical(manifest)[:-1] + b',"mediaType":"' + OCI_MANIFEST.encode() + b'"}'
    r = push_manifest(client, name, "dup", body, expect=None)
    assert r.status_code in (201, 400), (r.status_code, r.text)
    if r.status_code == 201:
        assert client.get(f"/v2/{name}/manifests/dup").content == body


def test_missing_content_type_on_manifest_put(client: httpx.Client) -> None:
    """Content-Type is a SHOULD for clients; with a mediaType field the manifest is usable."""
    name = repo_name()
    body = canonical(valid_manifest(client, name))
    r = client.put(f"/v2/{name}/manifests/v1", content=body)
    assert r.status_code in (201, 400), (r.status_code, r.text)
    if r.status_code == 201:
        assert client.get(f"/v2/{name}/manifests/v1").headers["Content-Type"] == OCI_MANIFEST


def test_manifest_with_many_layers(client: httpx.Client) -> None:
    name = repo_name()
    config, _ = push_blob(client, name)
    layer, _ = push_blob(client, name)
    manifest = image_manifest(config, [layer] * 5000)
    push_manifest(client, name, "many", manifest)


def test_descriptor_data_field_not_base64(client: httpx.Client) -> None:
    """image-spec descriptor `data`: 'Values MUST conform to the Base 64 encoding, as defined in
    RFC 4648'."""
    name = repo_name()
    manifest = valid_manifest(client, name)
    manifest["config"]["data"] = "!!!not base64!!!"  # type: ignore[index]
    r = push_manifest(client, name, "v1", manifest, expect=None)
    assert_client_error(r, 400)


def test_manifest_referencing_itself_as_subject(client: httpx.Client) -> None:
    """A subject cannot be the manifest itself (its digest would change): any digest is fine."""
    name = repo_name()
    manifest = valid_manifest(client, name)
    manifest["subject"] = descriptor(OCI_MANIFEST, b"self")
    r = push_manifest(client, name, "v1", manifest)
    assert r.headers["OCI-Subject"] == digest_of(b"self")


def test_index_with_garbage_child_descriptor(client: httpx.Client) -> None:
    name = repo_name()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": 42, "size": "x"}],
    }
    r = push_manifest(
        client, name, "v1", index, "application/vnd.oci.image.index.v1+json", expect=None
    )
    assert_client_error(r, 400)
    assert "MANIFEST_INVALID" in error_codes(r)


def test_huge_query_string(client: httpx.Client) -> None:
    r = client.get("/v2/_catalog", params={"junk": "x" * 60_000})
    assert r.status_code in (200, 400, 414, 431), r.status_code


def test_huge_header(client: httpx.Client) -> None:
    r = client.get("/v2/", headers={"X-Junk": "x" * 100_000})
    assert r.status_code in (200, 400, 431), r.status_code


def test_truncated_chunk_leaves_the_upload_where_it_was(
    client: httpx.Client, registry_server: RegistryProcess
) -> None:
    """A client that dies mid-PATCH: nothing it sent counts, the upload continues from where it
    was, and the server treats it as the client's failure, not an internal error."""
    name = repo_name()
    location = start_upload(client, name)
    host, port = registry_server.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b"0123456789"
        )
        raw.shutdown(socket.SHUT_WR)
        raw.recv(1024)  # returns once the server has seen the body end and closed
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"
    data = random_blob(300)
    # The dead request's handler may still be releasing the session (with PostgreSQL, an
    # unlock round trip after the connection closed): meanwhile a PATCH gets 416, as it would
    # during any concurrent request. Poll until it is released.
    for _ in range(100):
        r = client.patch(location, content=data)
        if r.status_code != 416 or "another request" not in r.text:
            break
        threading.Event().wait(0.05)
    assert r.status_code == 202, r.text
    digest = digest_of(data)
    assert client.put(with_query(r.headers["Location"], digest=digest)).status_code == 201
    assert client.get(f"/v2/{name}/blobs/{digest}").content == data
    assert f"unhandled error in PATCH {location}" not in registry_server.log()


def test_nul_characters_in_stored_text_are_kept_or_refused_never_a_500(
    client: httpx.Client,
) -> None:
    """PostgreSQL text and jsonb cannot hold NUL: a manifest whose annotations or artifactType
    contain one is stored byte for byte (and found again) or refused with a 4xx."""
    name = repo_name()
    config, _ = push_blob(client, name, b'{"nul":1}')
    annotated = image_manifest(config, [], annotations={"a\u0000b": "x\u0000y"})
    typed = image_manifest(config, [], artifactType="application/x\u0000y")
    for tag, document, allowed in (("a", annotated, (201,)), ("t", typed, (201, 400))):
        body = canonical(document)
        r = push_manifest(client, name, tag, body, expect=None)
        assert r.status_code in allowed, r.text
        if r.status_code == 201:
            got = client.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert got.content == body
    referrers = client.get(
        f"/v2/{name}/referrers/{digest_of(body)}", params={"artifactType": "a\u0000b"}
    )
    assert referrers.status_code in (200, 400)
