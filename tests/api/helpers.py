"""Shared building blocks for the HTTP API tests (OCI distribution-spec).

Everything here talks to the registry only through plain HTTP, the way a conformance suite would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_NONDIST_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

API_VERSION_HEADER = "Docker-Distribution-API-Version"

# The 14 error codes of the distribution-spec "Error Codes" table.
SPEC_ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
)


def repo_name(prefix: str = "api") -> str:
    """A fresh, valid repository name so tests never share state."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def random_blob(size: int = 64) -> bytes:
    return os.urandom(size)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def error_codes(response: httpx.Response) -> list[str]:
    """The `code` of every error in a spec-format error body (asserting that format)."""
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("errors"), list), body
    assert body["errors"], body
    codes = []
    for error in body["errors"]:
        assert isinstance(error, dict), body
        code = error["code"]
        assert re.fullmatch(r"[A-Z_]+", code), code
        if "message" in error:
            assert isinstance(error["message"], str), body
        codes.append(code)
    return codes


def assert_error(response: httpx.Response, status: int | tuple[int, ...], code: str) -> None:
    """The response has the status and carries `code` in a spec-format JSON error body."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert code in error_codes(response), response.text


def start_upload(client: httpx.Client, name: str, **params: str) -> str:
    """POST /v2/<name>/blobs/uploads/ and return the upload Location (as given)."""
    r = client.post(f"/v2/{name}/blobs/uploads/", params=params or None)
    assert r.status_code == 202, (r.status_code, r.text)
    return r.headers["Location"]


def location_url(location: str) -> str:
    """A Location usable by the client: relative ones as is, absolute ones reduced to a path."""
    if location.startswith(("http://", "https://")):
        url = httpx.URL(location)
        return url.raw_path.decode()
    return location


def with_query(location: str, **params: str) -> str:
    """Append query parameters to an upload Location that may already carry some."""
    url = httpx.URL(location_url(location))
    return str(url.copy_merge_params(params))


def push_blob(client: httpx.Client, name: str, data: bytes | None = None) -> tuple[bytes, str]:
    """Monolithic POST-then-PUT upload; returns (data, digest)."""
    if data is None:
        data = random_blob()
    digest = digest_of(data)
    location = start_upload(client, name)
    r = client.put(
        with_query(location, digest=digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return data, digest


def get_blob(client: httpx.Client, name: str, digest: str) -> tuple[httpx.Response, bytes]:
    """GET a blob: the registry's own response (200, or 307 to object storage, which the spec
    allows) and the blob's bytes, following the redirect if there is one."""
    r = client.get(f"/v2/{name}/blobs/{digest}", follow_redirects=False)
    assert r.status_code in (200, 307), (r.status_code, r.text)
    if r.status_code == 307:
        return r, httpx.get(r.headers["Location"], timeout=60).content
    return r, r.content


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def canonical(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def image_manifest(
    config: bytes,
    layers: list[bytes],
    *,
    media_type: str | None = OCI_MANIFEST,
    config_type: str = OCI_CONFIG,
    layer_type: str = OCI_LAYER,
    **extra: Any,
) -> dict[str, Any]:
    """An image manifest document (dict) referencing the given config and layer blobs."""
    manifest: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        manifest["mediaType"] = media_type
    manifest["config"] = descriptor(config_type, config)
    manifest["layers"] = [descriptor(layer_type, layer) for layer in layers]
    manifest.update(extra)
    return manifest


def push_manifest(
    client: httpx.Client,
    name: str,
    reference: str,
    body: bytes | dict[str, Any],
    media_type: str = OCI_MANIFEST,
    *,
    expect: int | None = 201,
    params: Any = None,
) -> httpx.Response:
    """PUT a manifest (a dict is serialised compactly); asserts the status unless expect=None."""
    content = canonical(body) if isinstance(body, dict) else body
    r = client.put(
        f"/v2/{name}/manifests/{reference}",
        content=content,
        headers={"Content-Type": media_type},
        params=params,
    )
    if expect is not None:
        assert r.status_code == expect, (r.status_code, r.text)
    return r


def push_image(
    client: httpx.Client,
    name: str,
    reference: str | None = None,
    *,
    layers: int = 1,
    media_type: str = OCI_MANIFEST,
    **extra: Any,
) -> tuple[bytes, str]:
    """Push config + layers + an OCI image manifest; returns (manifest bytes, manifest digest).

    With reference None the manifest is pushed by digest."""
    config, _ = push_blob(client, name, json.dumps({"n": uuid.uuid4().hex}).encode())
    layer_data = [push_blob(client, name)[0] for _ in range(layers)]
    if media_type == DOCKER_MANIFEST:
        document = image_manifest(
            config,
            layer_data,
            media_type=DOCKER_MANIFEST,
            config_type=DOCKER_CONFIG,
            layer_type=DOCKER_LAYER,
            **extra,
        )
    else:
        document = image_manifest(config, layer_data, media_type=media_type, **extra)
    body = canonical(document)
    digest = digest_of(body)
    push_manifest(client, name, reference or digest, body, media_type)
    return body, digest


def push_artifact(
    client: httpx.Client,
    name: str,
    subject: tuple[bytes, str] | None,
    artifact_type: str | None = "application/vnd.example.sbom.v1",
    *,
    annotations: dict[str, str] | None = None,
    config_type: str = OCI_EMPTY,
    reference: str | None = None,
) -> tuple[bytes, str, httpx.Response]:
    """Push an OCI artifact manifest (empty config, one layer) optionally with a subject.

    Returns (manifest bytes, digest, PUT response)."""
    if config_type == OCI_EMPTY:
        config = EMPTY_BLOB
        push_blob(client, name, EMPTY_BLOB)
    else:
        config, _ = push_blob(client, name, json.dumps({"c": uuid.uuid4().hex}).encode())
    layer, _ = push_blob(client, name)
    extra: dict[str, Any] = {}
    if artifact_type is not None:
        extra["artifactType"] = artifact_type
    if subject is not None:
        extra["subject"] = descriptor(OCI_MANIFEST, subject[0])
    if annotations is not None:
        extra["annotations"] = annotations
    document = image_manifest(
        config, [layer], config_type=config_type, layer_type="text/plain", **extra
    )
    body = canonical(document)
    digest = digest_of(body)
    r = push_manifest(client, name, reference or digest, body)
    return body, digest, r


def parse_link(header: str) -> str:
    """The target URL of an RFC 5988 `Link: <url>; rel="next"` header."""
    match = re.fullmatch(r'\s*<([^>]+)>\s*;\s*rel="?next"?\s*', header)
    assert match is not None, header
    return match.group(1)
