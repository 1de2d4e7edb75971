from __future__ import annotations

import json
from typing import Any

import pytest

from cargobay.errors import ManifestInvalid
from cargobay.registry.digest import Digest
from cargobay.registry.manifests import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_manifest,
)

A, B, C = ("sha256:" + c * 64 for c in "abc")


def image(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": A, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": B, "size": 3}],
        **extra,
    }


def parse(body: dict[str, Any] | bytes, content_type: str | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_manifest(raw, content_type, Digest.of(raw)).record


def test_image_manifest_references_and_artifact_type() -> None:
    record = parse(image())
    assert record.media_type == OCI_MANIFEST
    assert record.blob_references == (A, B)
    assert record.artifact_type == "application/vnd.oci.image.config.v1+json"


def test_artifact_type_and_subject() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": C, "size": 1}
    record = parse(image(artifactType="application/x", subject=subject, annotations={"k": "v"}))
    assert (record.artifact_type, record.subject, record.annotations) == (
        "application/x",
        C,
        {"k": "v"},
    )


def test_media_type_from_content_type_when_field_missing() -> None:
    body = image()
    del body["mediaType"]
    assert parse(body, DOCKER_MANIFEST).media_type == DOCKER_MANIFEST
    assert parse(body, f"{OCI_MANIFEST}; charset=utf-8").media_type == OCI_MANIFEST


def test_conflicting_content_type_is_refused() -> None:
    with pytest.raises(ManifestInvalid, match="does not match"):
        parse(image(), DOCKER_MANIFEST)


def test_foreign_layers_are_not_required() -> None:
    layer = {"mediaType": "application/x", "digest": C, "size": 1, "urls": ["https://x.test/l"]}
    record = parse(image(layers=[layer]))
    assert record.blob_references == (A,)


def test_fields_of_the_other_kind_are_ignored_whatever_their_shape() -> None:
    """Found by fuzz/fuzz_parsers.py: an index with a "config" lacking "size" (unknown fields
    are allowed, so the schema passes it) was a KeyError, a 500 over HTTP."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": B, "size": 1}],
        "config": {"mediaType": "x"},
        "layers": [{"size": "big"}, 7],
    }
    record = parse(index)
    assert record.manifest_references == (B,) and record.blob_references == ()
    record = parse(image(manifests=[{"digest": 5}]))
    assert record.blob_references == (A, B) and record.manifest_references == ()


def test_index_references_children() -> None:
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": B, "size": 1}],
    }
    record = parse(body)
    assert record.manifest_references == (B,)
    assert record.artifact_type is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        ({"schemaVersion": 1, "fsLayers": []}, "schema 1"),
        (image(mediaType="application/vnd.docker.distribution.manifest.v1+json"), "schema 1"),
        (image(mediaType="application/x-unknown"), "unsupported manifest media type"),
        (image(config={"digest": A}), "schema"),
        (image(layers=[{"mediaType": "a/b", "digest": B, "size": "3"}]), "schema"),
        (image(annotations={"k": 1}), "schema"),
        (image(layers=[{"mediaType": "a/b", "digest": "md5:" + "a" * 32, "size": 3}]), "digest"),
        ({"schemaVersion": 2}, "media type"),
    ],
)
def test_invalid_manifests(body: dict[str, Any] | bytes, message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message):
        parse(body)
