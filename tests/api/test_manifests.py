"""Pushing manifests (end-7a/7b), pulling manifests (end-3), deleting manifests and tags (end-9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_BLOB,
    EMPTY_DIGEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    OCI_NONDIST_LAYER,
    assert_error,
    canonical,
    descriptor,
    digest_of,
    image_manifest,
    location_url,
    push_blob,
    push_image,
    push_manifest,
    random_blob,
    repo_name,
)
from tests.server import RegistryProcess


def blobs_for(client: httpx.Client, name: str, layers: int = 1) -> tuple[bytes, list[bytes]]:
    config, _ = push_blob(client, name, json.dumps({"cfg": random_blob(8).hex()}).encode())
    return config, [push_blob(client, name)[0] for _ in range(layers)]


def index_of(manifests: list[tuple[bytes, str]], media_type: str = OCI_INDEX) -> dict[str, Any]:
    child_type = OCI_MANIFEST if media_type == OCI_INDEX else DOCKER_MANIFEST
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            descriptor(child_type, body, platform={"architecture": "amd64", "os": "linux"})
            for body, _ in manifests
        ],
    }


# --- Push and pull


def test_put_manifest_by_tag_201(client: httpx.Client) -> None:
    """Pushing Manifests: 'Upon a successful upload, the registry MUST return response code 201
    Created, and MUST have the Location header'; Docker-Content-Digest 'MUST be equal to the
    client provided digest'."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    digest = digest_of(body)
    r = push_manifest(client, name, "v1", body)
    assert r.headers["Docker-Content-Digest"] == digest
    assert location_url(r.headers["Location"]) == f"/v2/{name}/manifests/{digest}"


def test_put_manifest_by_digest_201(client: httpx.Client) -> None:
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    digest = digest_of(body)
    r = push_manifest(client, name, digest, body)
    assert r.headers["Docker-Content-Digest"] == digest
    assert location_url(r.headers["Location"]) == f"/v2/{name}/manifests/{digest}"


def test_manifest_location_is_pullable(client: httpx.Client) -> None:
    """'The <location> is a pullable manifest URL.'"""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    r = push_manifest(client, name, "latest", body)
    pulled = client.get(location_url(r.headers["Location"]), headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code == 200
    assert pulled.content == body


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_get_manifest_returns_exact_bytes(client: httpx.Client, by: str) -> None:
    """'The registry MUST store the manifest in the exact byte representation provided by the
    client'; a GET 'MUST provide the expected manifest, with a response code 200 OK'."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    # Deliberately non-canonical JSON: odd whitespace and key order must survive.
    body = json.dumps(image_manifest(config, layers), indent=3).encode() + b"\n\n"
    digest = digest_of(body)
    push_manifest(client, name, "odd", body)
    reference = "odd" if by == "tag" else digest
    r = client.get(f"/v2/{name}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert r.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_head_manifest(client: httpx.Client, by: str) -> None:
    """HEAD 'MUST return 200 OK' with Docker-Content-Digest and Content-Length."""
    name = repo_name()
    body, digest = push_image(client, name, "v1")
    reference = "v1" if by == "tag" else digest
    r = client.head(f"/v2/{name}/manifests/{reference}")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(body))
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert r.content == b""


def test_get_manifest_without_accept_header(client: httpx.Client) -> None:
    """The Accept header is a SHOULD for clients; a manifest is still served without it."""
    name = repo_name()
    body, _ = push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/manifests/v1")
    assert r.status_code == 200
    assert r.content == body


def test_content_type_has_no_parameters(client: httpx.Client) -> None:
    """'The registry SHOULD NOT include parameters on the Content-Type header.'"""
    name = repo_name()
    push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/manifests/v1")
    assert ";" not in r.headers["Content-Type"]


def test_put_content_type_parameters_are_ignored(client: httpx.Client) -> None:
    """'The registry SHOULD ignore parameters on the Content-Type header.'"""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    push_manifest(client, name, "v1", body, OCI_MANIFEST + "; charset=utf-8")
    r = client.get(f"/v2/{name}/manifests/v1")
    assert r.headers["Content-Type"] == OCI_MANIFEST


def test_get_unknown_tag_is_404(client: httpx.Client) -> None:
    """'If the manifest is not found in the repository, the response code MUST be 404'."""
    name = repo_name()
    push_image(client, name, "v1")
    assert_error(client.get(f"/v2/{name}/manifests/v2"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{name}/manifests/v2").status_code == 404


def test_get_unknown_digest_is_404(client: httpx.Client) -> None:
    name = repo_name()
    push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/manifests/{digest_of(b'nothing')}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_get_manifest_in_unknown_repository_is_404(client: httpx.Client) -> None:
    """'An attempt to pull a nonexistent repository MUST return response code 404 Not Found'."""
    r = client.get(f"/v2/{repo_name()}/manifests/latest")
    assert_error(r, 404, "NAME_UNKNOWN")


def test_manifest_of_another_repository_is_404(client: httpx.Client) -> None:
    name, other = repo_name(), repo_name()
    _, digest = push_image(client, name, "v1")
    push_image(client, other, "v1")
    assert client.get(f"/v2/{other}/manifests/{digest}").status_code == 404


def test_put_by_digest_not_matching_body_is_400(client: httpx.Client) -> None:
    """Docker-Content-Digest 'MUST be equal to the client provided digest': a body that does not
    hash to the reference is DIGEST_INVALID."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    wrong = digest_of(body + b" ")
    r = push_manifest(client, name, wrong, body, expect=400)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.get(f"/v2/{name}/manifests/{wrong}").status_code == 404


def test_put_by_sha512_digest(client: httpx.Client) -> None:
    """A manifest may be addressed by a sha512 digest (image-spec: SHA-512 MAY be implemented)."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    digest = digest_of(body, "sha512")
    r = push_manifest(client, name, digest, body)
    assert r.headers["Docker-Content-Digest"] == digest
    pulled = client.get(f"/v2/{name}/manifests/{digest}")
    assert pulled.status_code == 200
    assert pulled.content == body


def test_same_manifest_pushed_twice(client: httpx.Client) -> None:
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers))
    first = push_manifest(client, name, "a", body)
    second = push_manifest(client, name, "a", body)
    assert first.headers["Docker-Content-Digest"] == second.headers["Docker-Content-Digest"]


def test_retag_moves_tag(client: httpx.Client) -> None:
    """A tag is 'a custom, human-readable pointer to a manifest': pushing to it again repoints."""
    name = repo_name()
    _, first = push_image(client, name, "moving")
    body, second = push_image(client, name, "moving")
    assert first != second
    r = client.get(f"/v2/{name}/manifests/moving")
    assert r.headers["Docker-Content-Digest"] == second
    assert r.content == body
    assert client.get(f"/v2/{name}/manifests/{first}").status_code == 200


def test_many_tags_one_manifest(client: httpx.Client) -> None:
    """'A manifest digest may have zero, one, or many tags referencing it.'"""
    name = repo_name()
    body, digest = push_image(client, name, "one")
    for tag in ("two", "three"):
        push_manifest(client, name, tag, body)
    for tag in ("one", "two", "three"):
        assert client.get(f"/v2/{name}/manifests/{tag}").headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize(
    "tag", ["a", "A_b.C-d", "_underscore", "1.2.3", "x" * 128, "sha256-" + "a" * 64]
)
def test_valid_tags_accepted(client: httpx.Client, tag: str) -> None:
    """Tags match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`."""
    name = repo_name()
    body, _ = push_image(client, name, tag)
    assert client.get(f"/v2/{name}/manifests/{tag}").content == body


@pytest.mark.parametrize("tag", ["x" * 129, "-dash", ".dot", "with%20space", "a+b", "ta:g"])
def test_invalid_tag_rejected_400(client: httpx.Client, tag: str) -> None:
    """'<tag-or-digest> as a tag MUST be at most 128 characters ... and MUST match
    [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}' and 'MUST NOT be in any other format'."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    r = push_manifest(client, name, tag, image_manifest(config, layers), expect=None)
    assert r.status_code == 400, (r.status_code, r.text)


@pytest.mark.parametrize("tag", ["x" * 129, "-dash", ".dot"])
def test_get_invalid_tag_is_400(client: httpx.Client, tag: str) -> None:
    name = repo_name()
    push_image(client, name, "v1")
    assert client.get(f"/v2/{name}/manifests/{tag}").status_code == 400


@pytest.mark.parametrize(
    "name",
    ["Upper/case", "a//b", "trailing-", "-leading", "a..b", "a/b_", "a___b", "a/.b", "a/-b"],
)
def test_invalid_repository_name_is_400(client: httpx.Client, name: str) -> None:
    """'<name> MUST match the following regular expression:
    [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*'
    - NAME_INVALID 'invalid repository name'."""
    r = client.put(
        f"/v2/{name}/manifests/latest",
        content=b'{"schemaVersion":2}',
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_error(r, 400, "NAME_INVALID")


@pytest.mark.parametrize("name", ["Upper/case", "a//b", "trailing-"])
def test_invalid_repository_name_on_pull_is_400(client: httpx.Client, name: str) -> None:
    assert_error(client.get(f"/v2/{name}/manifests/latest"), 400, "NAME_INVALID")


@pytest.mark.parametrize("name", ["a", "a/b/c/d/e", "a.b_c__d-e--f", "0/9", "x" * 200])
def test_valid_repository_names(client: httpx.Client, name: str) -> None:
    name = f"{name}/{random_blob(4).hex()}"
    body, _ = push_image(client, name, "v1")
    assert client.get(f"/v2/{name}/manifests/v1").content == body


# --- Referenced content must exist


def test_missing_layer_is_manifest_blob_unknown(client: httpx.Client) -> None:
    """'it MUST result in one or more MANIFEST_BLOB_UNKNOWN errors'."""
    name = repo_name()
    config, _ = blobs_for(client, name, 0)
    body = image_manifest(config, [random_blob()])
    r = push_manifest(client, name, "v1", body, expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert client.get(f"/v2/{name}/manifests/v1").status_code == 404


def test_missing_config_is_manifest_blob_unknown(client: httpx.Client) -> None:
    name = repo_name()
    _, layers = blobs_for(client, name)
    body = image_manifest(b'{"missing":true}', layers)
    r = push_manifest(client, name, "v1", body, expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_only_in_other_repository_counts_as_missing(client: httpx.Client) -> None:
    """The manifest references blobs 'in a repository': a blob of another repository is
    unknown to this one."""
    name, other = repo_name(), repo_name()
    config, layers = blobs_for(client, other)
    r = push_manifest(client, name, "v1", image_manifest(config, layers), expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_non_distributable_layer_with_urls_need_not_exist(client: httpx.Client) -> None:
    """image-spec: layers with `urls` may be fetched elsewhere; the registry need not hold them."""
    name = repo_name()
    config, _ = blobs_for(client, name, 0)
    foreign = random_blob()
    manifest = image_manifest(config, [])
    manifest["layers"] = [
        descriptor(OCI_NONDIST_LAYER, foreign, urls=["https://example.com/layer.tar.gz"])
    ]
    push_manifest(client, name, "v1", manifest)


def test_manifest_with_no_layers_accepted(client: httpx.Client) -> None:
    """'The uploaded manifest MUST reference any blobs that make up the object. However, the list
    of blobs MAY be empty.'"""
    name = repo_name()
    config, _ = blobs_for(client, name, 0)
    push_manifest(client, name, "v1", image_manifest(config, []))


def test_artifact_with_empty_config(client: httpx.Client) -> None:
    """image-spec artifacts guidance: `artifactType` + config `application/vnd.oci.empty.v1+json`
    (the blob `{}`)."""
    name = repo_name()
    _, digest = push_blob(client, name, EMPTY_BLOB)
    assert digest == EMPTY_DIGEST
    layer, _ = push_blob(client, name)
    manifest = image_manifest(
        EMPTY_BLOB,
        [layer],
        config_type=OCI_EMPTY,
        layer_type="application/vnd.example.thing",
        artifactType="application/vnd.example.artifact.v1",
    )
    body = canonical(manifest)
    push_manifest(client, name, "artifact", body)
    assert client.get(f"/v2/{name}/manifests/artifact").content == body


def test_artifact_with_empty_layer(client: httpx.Client) -> None:
    name = repo_name()
    push_blob(client, name, EMPTY_BLOB)
    manifest = image_manifest(
        EMPTY_BLOB,
        [EMPTY_BLOB],
        config_type=OCI_EMPTY,
        layer_type=OCI_EMPTY,
        artifactType="application/vnd.example.marker",
    )
    push_manifest(client, name, "marker", manifest)


# --- Indexes / manifest lists


def test_push_index(client: httpx.Client) -> None:
    name = repo_name()
    children = [push_image(client, name) for _ in range(2)]
    body = canonical(index_of(children))
    r = push_manifest(client, name, "multi", body, OCI_INDEX)
    assert r.headers["Docker-Content-Digest"] == digest_of(body)
    pulled = client.get(f"/v2/{name}/manifests/multi", headers={"Accept": OCI_INDEX})
    assert pulled.content == body
    assert pulled.headers["Content-Type"] == OCI_INDEX


def test_index_with_missing_child_is_manifest_blob_unknown(client: httpx.Client) -> None:
    """MANIFEST_BLOB_UNKNOWN: 'manifest references a manifest or blob unknown to registry'."""
    name = repo_name()
    present = push_image(client, name)
    missing = (canonical({"schemaVersion": 2, "missing": True}), "")
    r = push_manifest(client, name, "multi", index_of([present, missing]), OCI_INDEX, expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_docker_manifest_list(client: httpx.Client) -> None:
    name = repo_name()
    children = [push_image(client, name, media_type=DOCKER_MANIFEST) for _ in range(2)]
    body = canonical(index_of(children, DOCKER_LIST))
    push_manifest(client, name, "list", body, DOCKER_LIST)
    pulled = client.get(f"/v2/{name}/manifests/list", headers={"Accept": DOCKER_LIST})
    assert pulled.content == body
    assert pulled.headers["Content-Type"] == DOCKER_LIST


def test_docker_manifest_list_with_missing_child(client: httpx.Client) -> None:
    name = repo_name()
    missing = (canonical({"schemaVersion": 2, "x": 1}), "")
    r = push_manifest(client, name, "l", index_of([missing], DOCKER_LIST), DOCKER_LIST, expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_index_referencing_index(client: httpx.Client) -> None:
    name = repo_name()
    inner = canonical(index_of([push_image(client, name)]))
    push_manifest(client, name, digest_of(inner), inner, OCI_INDEX)
    outer = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_INDEX, inner)],
    }
    push_manifest(client, name, "nested", outer, OCI_INDEX)


def test_index_with_child_in_other_repository_is_rejected(client: httpx.Client) -> None:
    name, other = repo_name(), repo_name()
    child = push_image(client, other)
    r = push_manifest(client, name, "multi", index_of([child]), OCI_INDEX, expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_empty_index_accepted(client: httpx.Client) -> None:
    name = repo_name()
    push_manifest(
        client,
        name,
        "empty",
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []},
        OCI_INDEX,
    )


# --- Media types


def test_docker_v2_manifest(client: httpx.Client) -> None:
    name = repo_name()
    body, digest = push_image(client, name, "docker", media_type=DOCKER_MANIFEST)
    r = client.get(f"/v2/{name}/manifests/docker", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.headers["Docker-Content-Digest"] == digest


def test_manifest_without_media_type_field_uses_content_type(client: httpx.Client) -> None:
    """'The Content-Type header SHOULD match what the client pushed as the manifest's
    Content-Type' - mediaType is a SHOULD in a manifest, so the pushed Content-Type decides."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = canonical(image_manifest(config, layers, media_type=None))
    push_manifest(client, name, "nomt", body, OCI_MANIFEST)
    r = client.get(f"/v2/{name}/manifests/nomt")
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert r.content == body


def test_index_without_media_type_field_uses_content_type(client: httpx.Client) -> None:
    name = repo_name()
    document = index_of([push_image(client, name)])
    del document["mediaType"]
    push_manifest(client, name, "idx", document, OCI_INDEX)
    assert client.get(f"/v2/{name}/manifests/idx").headers["Content-Type"] == OCI_INDEX


def test_docker_manifest_without_media_type_field(client: httpx.Client) -> None:
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = image_manifest(
        config, layers, media_type=None, config_type=DOCKER_CONFIG, layer_type=DOCKER_LAYER
    )
    push_manifest(client, name, "d", body, DOCKER_MANIFEST)
    assert client.get(f"/v2/{name}/manifests/d").headers["Content-Type"] == DOCKER_MANIFEST


def test_media_type_conflicting_with_content_type_is_invalid(client: httpx.Client) -> None:
    """'If a manifest includes a mediaType field, clients MUST set the Content-Type header to the
    value specified by the mediaType field' - a conflict is MANIFEST_INVALID."""
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = image_manifest(config, layers)
    r = push_manifest(client, name, "v1", body, DOCKER_MANIFEST, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_index_media_type_with_manifest_content_type_is_invalid(client: httpx.Client) -> None:
    name = repo_name()
    document = index_of([push_image(client, name)])
    r = push_manifest(client, name, "v1", document, OCI_MANIFEST, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_unknown_media_type_is_invalid(client: httpx.Client) -> None:
    name = repo_name()
    config, layers = blobs_for(client, name)
    body = image_manifest(config, layers, media_type="application/vnd.example.unknown+json")
    r = push_manifest(client, name, "v1", body, "application/vnd.example.unknown+json", expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ],
)
def test_docker_schema1_rejected(client: httpx.Client, media_type: str) -> None:
    """Docker schema 1 is deprecated (the spec lists its errors as legacy): MANIFEST_INVALID."""
    name = repo_name()
    body = {
        "schemaVersion": 1,
        "name": name,
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": digest_of(b"")}],
        "history": [{"v1Compatibility": "{}"}],
    }
    r = push_manifest(client, name, "v1", body, media_type, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")
    message = " ".join(e.get("message", "") + str(e.get("detail", "")) for e in r.json()["errors"])
    assert "schema 1" in message.lower() or "deprecated" in message.lower(), message


def test_schema_version_1_body_rejected_under_oci_content_type(client: httpx.Client) -> None:
    name = repo_name()
    body = {"schemaVersion": 1, "name": name, "tag": "v1", "fsLayers": [], "history": []}
    r = push_manifest(client, name, "v1", body, OCI_MANIFEST, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


# --- Invalid manifests


def _valid(client: httpx.Client, name: str) -> dict[str, Any]:
    config, layers = blobs_for(client, name)
    return image_manifest(config, layers)


@pytest.mark.parametrize(
    ("description", "mutate"),
    [
        ("missing config", lambda m: m.pop("config")),
        ("config size as string", lambda m: m["config"].update(size=str(m["config"]["size"]))),
        ("fractional size", lambda m: m["config"].update(size=1.5)),
        ("bad digest in descriptor", lambda m: m["layers"][0].update(digest="sha256:xyz")),
        ("descriptor without digest", lambda m: m["layers"][0].pop("digest")),
        ("descriptor without mediaType", lambda m: m["config"].pop("mediaType")),
        ("annotation value not a string", lambda m: m.update(annotations={"a": 1})),
        ("layers not a list", lambda m: m.update(layers={"a": 1})),
        ("schemaVersion 3", lambda m: m.update(schemaVersion=3)),
        ("schemaVersion missing", lambda m: m.pop("schemaVersion")),
        ("schemaVersion as string", lambda m: m.update(schemaVersion="2")),
        ("subject not a descriptor", lambda m: m.update(subject="sha256:abc")),
    ],
)
def test_schema_violations_are_manifest_invalid(
    client: httpx.Client, description: str, mutate: Any
) -> None:
    """image-spec manifest schema violations: 400 MANIFEST_INVALID ('manifest invalid')."""
    name = repo_name()
    manifest = _valid(client, name)
    mutate(manifest)
    r = push_manifest(client, name, "bad", manifest, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert client.get(f"/v2/{name}/manifests/bad").status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b"[]", b"[1,2]", b"null", b"42", b'"string"', b'{"schemaVersion":2'],
)
def test_non_json_or_non_object_is_manifest_invalid(client: httpx.Client, body: bytes) -> None:
    name = repo_name()
    r = push_manifest(client, name, "bad", body, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_index_with_non_list_manifests_is_invalid(client: httpx.Client) -> None:
    name = repo_name()
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "nope"}
    r = push_manifest(client, name, "bad", body, OCI_INDEX, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_manifest_too_large_is_413(client: httpx.Client) -> None:
    """'A registry that enforces this limit SHOULD respond ... with 413 Payload Too Large'."""
    name = repo_name()
    manifest = _valid(client, name)
    manifest["annotations"] = {"pad": "x" * (4 * 1024 * 1024 + 1)}
    r = push_manifest(client, name, "huge", manifest, expect=None)
    assert r.status_code == 413, (r.status_code, r.text[:200])


def test_manifest_just_under_4mb_accepted(client: httpx.Client) -> None:
    """'Client and registry implementations SHOULD expect to be able to support manifest pushes
    of at least 4 megabytes.'"""
    name = repo_name()
    manifest = _valid(client, name)
    manifest["annotations"] = {"pad": ""}
    overhead = len(canonical(manifest))
    manifest["annotations"]["pad"] = "x" * (4 * 1000 * 1000 - overhead)
    body = canonical(manifest)
    assert len(body) == 4_000_000
    push_manifest(client, name, "big", body)
    assert client.get(f"/v2/{name}/manifests/big").content == body


def test_max_manifest_bytes_config(start_registry: Callable[..., RegistryProcess]) -> None:
    server = start_registry(config={"registry": {"max_manifest_bytes": 2000}})
    with httpx.Client(base_url=server.url, timeout=60) as c:
        name = repo_name()
        manifest = _valid(c, name)
        push_manifest(c, name, "small", manifest)
        manifest["annotations"] = {"pad": "x" * 2000}
        assert push_manifest(c, name, "big", manifest, expect=None).status_code == 413


# --- Multiple tags on push by digest (end-7b)


def test_push_by_digest_with_tags(client: httpx.Client) -> None:
    """'MUST include an OCI-Tag response header ... for each accepted tag'."""
    name = repo_name()
    manifest = _valid(client, name)
    body = canonical(manifest)
    digest = digest_of(body)
    tags = ["1.2.3", "1.2", "1", "latest"]
    r = push_manifest(client, name, digest, body, params=[("tag", t) for t in tags])
    announced = [t.strip() for h in r.headers.get_list("oci-tag") for t in h.split(",")]
    assert sorted(announced) == sorted(tags)
    for tag in tags:
        assert client.get(f"/v2/{name}/manifests/{tag}").headers["Docker-Content-Digest"] == digest


def test_push_by_digest_with_at_least_ten_tags(client: httpx.Client) -> None:
    """'SHOULD support pushing at least 10 tags per request.'"""
    name = repo_name()
    body = canonical(_valid(client, name))
    tags = [f"t{i:02d}" for i in range(12)]
    r = push_manifest(client, name, digest_of(body), body, params=[("tag", t) for t in tags])
    announced = [t.strip() for h in r.headers.get_list("oci-tag") for t in h.split(",")]
    assert sorted(announced) == tags
    listed = client.get(f"/v2/{name}/tags/list").json()["tags"]
    assert listed == tags


def test_push_with_invalid_tag_parameter_is_400(client: httpx.Client) -> None:
    name = repo_name()
    body = canonical(_valid(client, name))
    digest = digest_of(body)
    r = push_manifest(
        client, name, digest, body, params=[("tag", "ok"), ("tag", "-bad")], expect=None
    )
    assert r.status_code == 400, r.text
    assert client.get(f"/v2/{name}/manifests/ok").status_code == 404


# --- Subject


def test_subject_to_missing_manifest_accepted_with_oci_subject(client: httpx.Client) -> None:
    """'A registry MUST initially accept an otherwise valid manifest with a subject field that
    references a manifest that does not exist' and 'MUST respond with the response header
    OCI-Subject: <subject digest>'."""
    name = repo_name()
    ghost = canonical({"schemaVersion": 2, "ghost": random_blob(4).hex()})
    manifest = _valid(client, name)
    manifest["subject"] = descriptor(OCI_MANIFEST, ghost)
    r = push_manifest(client, name, "sig", manifest)
    assert r.headers["OCI-Subject"] == digest_of(ghost)


def test_subject_to_existing_manifest_has_oci_subject(client: httpx.Client) -> None:
    name = repo_name()
    subject_body, subject_digest = push_image(client, name, "v1")
    manifest = _valid(client, name)
    manifest["subject"] = descriptor(OCI_MANIFEST, subject_body)
    r = push_manifest(client, name, digest_of(canonical(manifest)), manifest)
    assert r.headers["OCI-Subject"] == subject_digest


def test_index_with_subject_has_oci_subject(client: httpx.Client) -> None:
    name = repo_name()
    subject_body, subject_digest = push_image(client, name, "v1")
    document = index_of([push_image(client, name)])
    document["subject"] = descriptor(OCI_MANIFEST, subject_body)
    r = push_manifest(client, name, "idx", document, OCI_INDEX)
    assert r.headers["OCI-Subject"] == subject_digest


def test_no_oci_subject_without_subject(client: httpx.Client) -> None:
    name = repo_name()
    r = push_manifest(client, name, "v1", _valid(client, name))
    assert "OCI-Subject" not in r.headers


# --- Deletes (end-9)


def test_delete_manifest_by_digest(client: httpx.Client) -> None:
    """Deleting Manifests: 'Upon success, the registry MUST respond with a 202 Accepted code'
    and 'Once deleted, a GET to /v2/<name>/manifests/<digest> and any tag pointing to that digest
    will return a 404'."""
    name = repo_name()
    body, digest = push_image(client, name, "a")
    push_manifest(client, name, "b", body)
    push_image(client, name, "other")
    assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
    assert_error(client.get(f"/v2/{name}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{name}/manifests/a").status_code == 404
    assert client.get(f"/v2/{name}/manifests/b").status_code == 404
    assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["other"]


def test_delete_tag_keeps_manifest(client: httpx.Client) -> None:
    """Deleting tags: 'Upon success, the registry MUST respond with a 202 Accepted code' and
    'Once deleted, a GET to /v2/<name>/manifests/<tag> will return a 404'."""
    name = repo_name()
    body, digest = push_image(client, name, "a")
    push_manifest(client, name, "b", body)
    assert client.delete(f"/v2/{name}/manifests/a").status_code == 202
    assert_error(client.get(f"/v2/{name}/manifests/a"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{name}/manifests/b").status_code == 200
    r = client.get(f"/v2/{name}/manifests/{digest}")
    assert r.status_code == 200
    assert r.content == body
    assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["b"]


def test_delete_unknown_manifest_is_404(client: httpx.Client) -> None:
    name = repo_name()
    push_image(client, name, "a")
    assert_error(client.delete(f"/v2/{name}/manifests/{digest_of(b'x')}"), 404, "MANIFEST_UNKNOWN")


def test_delete_unknown_tag_is_404(client: httpx.Client) -> None:
    name = repo_name()
    push_image(client, name, "a")
    assert_error(client.delete(f"/v2/{name}/manifests/nope"), 404, "MANIFEST_UNKNOWN")


def test_delete_in_unknown_repository_is_404(client: httpx.Client) -> None:
    """'If the repository does not exist, the response MUST return 404 Not Found.'"""
    r = client.delete(f"/v2/{repo_name()}/manifests/{digest_of(b'x')}")
    assert r.status_code == 404


def test_delete_manifest_twice_is_404(client: httpx.Client) -> None:
    name = repo_name()
    _, digest = push_image(client, name, "a")
    assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
    assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 404


def test_manifest_can_be_pushed_again_after_delete(client: httpx.Client) -> None:
    name = repo_name()
    body, digest = push_image(client, name, "a")
    assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
    push_manifest(client, name, "a", body)
    assert client.get(f"/v2/{name}/manifests/a").content == body


def test_delete_manifest_with_invalid_reference_is_400(client: httpx.Client) -> None:
    """end-9 failure: 400 (invalid name or reference)."""
    name = repo_name()
    push_image(client, name, "a")
    assert client.delete(f"/v2/{name}/manifests/sha256:abc").status_code == 400


def test_manifest_referencing_sha512_blobs(client: httpx.Client) -> None:
    name = repo_name()
    config = b'{"sha512":true}'
    layer = random_blob()
    for data in (config, layer):
        location = client.post(
            f"/v2/{name}/blobs/uploads/", params={"digest-algorithm": "sha512"}
        ).headers["Location"]
        r = client.put(
            location_url(location), params={"digest": digest_of(data, "sha512")}, content=data
        )
        assert r.status_code == 201
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config, "sha512"),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(layer, "sha512"),
                "size": len(layer),
            }
        ],
    }
    push_manifest(client, name, "sha512", manifest)


def test_deleted_blob_no_longer_satisfies_manifest(client: httpx.Client) -> None:
    name = repo_name()
    config, layers = blobs_for(client, name)
    assert client.delete(f"/v2/{name}/blobs/{digest_of(layers[0])}").status_code == 202
    r = push_manifest(client, name, "v1", image_manifest(config, layers), expect=400)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_tag_can_move_to_other_media_type(client: httpx.Client) -> None:
    name = repo_name()
    child = push_image(client, name, "shared")
    body = canonical(index_of([child]))
    push_manifest(client, name, "shared", body, OCI_INDEX)
    r = client.get(f"/v2/{name}/manifests/shared")
    assert r.content == body
    assert r.headers["Content-Type"] == OCI_INDEX


def test_index_media_type_with_docker_list_content_type_is_invalid(client: httpx.Client) -> None:
    name = repo_name()
    document = index_of([push_image(client, name)])
    r = push_manifest(client, name, "v1", document, DOCKER_LIST, expect=400)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_tag_parameters_with_max_length_tags(client: httpx.Client) -> None:
    name = repo_name()
    body = canonical(_valid(client, name))
    tags = ["a" * 128, "b" * 128]
    r = push_manifest(client, name, digest_of(body), body, params=[("tag", t) for t in tags])
    announced = [t.strip() for h in r.headers.get_list("oci-tag") for t in h.split(",")]
    assert sorted(announced) == tags


def test_manifest_with_valid_embedded_data(client: httpx.Client) -> None:
    """image-spec 'Embedded Content': a descriptor may carry `data` (base64 of the content)."""
    import base64

    name = repo_name()
    manifest = _valid(client, name)
    config = manifest["config"]
    assert isinstance(config, dict)
    pulled = client.get(f"/v2/{name}/blobs/{config['digest']}").content
    config["data"] = base64.b64encode(pulled).decode()
    push_manifest(client, name, "embedded", manifest)
