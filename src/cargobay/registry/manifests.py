"""Manifest media types, parsing and validation (no storage, no HTTP).

`parse_manifest` turns the pushed bytes and Content-Type into a ManifestRecord: it decides the
media type, validates the JSON against the image-spec schemas shipped in `cargobay/schemas/`,
and extracts what the manifest references, its subject, and the fields the referrers API needs.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

from cargobay.errors import ManifestInvalid
from cargobay.metadata.base import ManifestRecord
from cargobay.registry.digest import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
EMPTY_JSON = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES | INDEX_TYPES

MAX_MANIFEST_SIZE = 4 * 1024 * 1024


MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    record: ManifestRecord
    body: dict[str, Any]


def parse_manifest(content: bytes, content_type: str | None, digest: Digest) -> ParsedManifest:
    try:
        # Strictly UTF-8 (RFC 8259 8.1): json.loads would also take UTF-16/32 and encoded
        # surrogates, which other clients cannot read.
        body = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestInvalid("manifest JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise ManifestInvalid("manifest must be a JSON object")

    media_type = _media_type(body, _bare(content_type))
    schema = (
        "image-manifest-schema.json"
        if media_type in IMAGE_MANIFEST_TYPES
        else "image-index-schema.json"
    )
    try:
        _validator(schema)(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = (exc.name or "").removeprefix("data").lstrip(".") or "(root)"
        raise ManifestInvalid(
            f"manifest does not match the {media_type} schema at {where}: {exc.message}"
        ) from None

    blobs: list[str] = []
    children: list[str] = []
    # Only the fields the schema validated: an index may carry a "config" or "layers" of any
    # shape (unknown fields are allowed), and so may an image manifest a "manifests".
    if media_type in IMAGE_MANIFEST_TYPES:
        descriptors = [body["config"], *body["layers"]]
    else:
        descriptors = list(body["manifests"])
    for descriptor in [*descriptors, body.get("subject")]:
        # The schema's int64 bound is a float (9223372036854775807 rounds up): check exactly.
        if descriptor and not -MAX_INT64 - 1 <= descriptor["size"] <= MAX_INT64:
            raise ManifestInvalid(f"descriptor size {descriptor['size']} is not an int64")
        if descriptor and "data" in descriptor:
            _check_embedded_data(descriptor)
    if media_type in IMAGE_MANIFEST_TYPES:
        config = body["config"]
        blobs.append(_descriptor_digest(config))
        for layer in body["layers"]:
            # Non-distributable ("foreign") layers live at their urls, not in this registry.
            if not layer.get("urls"):
                blobs.append(_descriptor_digest(layer))
        artifact_type = body.get("artifactType") or config.get("mediaType")
    else:
        children = [_descriptor_digest(m) for m in body["manifests"]]
        artifact_type = body.get("artifactType") or None

    subject = body.get("subject")
    annotations = body.get("annotations") or None
    return ParsedManifest(
        record=ManifestRecord(
            digest=str(digest),
            media_type=media_type,
            content=content,
            artifact_type=artifact_type,
            subject=_descriptor_digest(subject) if subject else None,
            annotations=annotations,
            blob_references=tuple(dict.fromkeys(blobs)),
            manifest_references=tuple(dict.fromkeys(children)),
        ),
        body=body,
    )


def _bare(content_type: str | None) -> str | None:
    """A Content-Type without parameters, or None if absent or generic."""
    if not content_type:
        return None
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare or None


def _media_type(body: dict[str, Any], content_type: str | None) -> str:
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if (
        body.get("schemaVersion") == 1
        or declared in DOCKER_SCHEMA1
        or content_type in DOCKER_SCHEMA1
    ):
        raise ManifestInvalid(
            "Docker image manifest schema 1 is deprecated and not supported;"
            " push the image as Docker schema 2 or OCI (e.g. skopeo copy --format v2s2)"
        )
    if declared is not None:
        if declared not in MANIFEST_TYPES:
            raise ManifestInvalid(f"unsupported manifest media type {declared!r}")
        if content_type in MANIFEST_TYPES and content_type != declared:
            raise ManifestInvalid(
                f"Content-Type {content_type!r} does not match the manifest's mediaType"
                f" {declared!r}"
            )
        return declared
    if content_type in MANIFEST_TYPES:
        return content_type
    # Neither a mediaType field nor a manifest Content-Type: go by the shape of the document.
    if "manifests" in body:
        return OCI_INDEX
    if "config" in body or "layers" in body:
        return OCI_MANIFEST
    raise ManifestInvalid(
        "cannot tell the manifest's media type: set mediaType or a manifest Content-Type"
    )


def _check_embedded_data(descriptor: dict[str, Any]) -> None:
    """A descriptor's `data` MUST be base64 of exactly the content it describes."""
    try:
        data = base64.b64decode(descriptor["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ManifestInvalid("descriptor data is not valid base64") from None
    digest = Digest.parse(_descriptor_digest(descriptor))
    if len(data) != descriptor["size"] or Digest.of(data, digest.algorithm) != digest:
        raise ManifestInvalid(f"descriptor data does not match its size and digest {digest}")


def _descriptor_digest(descriptor: dict[str, Any]) -> str:
    """The digest of a schema-validated descriptor, held to the algorithms we implement."""
    value = descriptor["digest"]
    try:
        return str(Digest.parse(value))
    except Exception:
        raise ManifestInvalid(f"descriptor has an unsupported digest {value!r}") from None


@cache
def _schemas() -> dict[str, Any]:
    files = resources.files("cargobay") / "schemas"
    schemas = {
        entry.name: json.loads(entry.read_text())
        for entry in files.iterdir()
        if entry.name.endswith(".json")
    }
    for schema in schemas.values():
        _escape_dollars(schema)
    return schemas


def _escape_dollars(node: Any) -> None:
    """fastjsonschema turns every unescaped `$` of a pattern into `\\Z`, which breaks the `$`
    inside the image-spec's media type character class; escaping it keeps its meaning."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                anchored = value.endswith("$")
                body = value[:-1] if anchored else value
                node[key] = body.replace("\\$", "$").replace("$", "\\$") + ("$" if anchored else "")
            else:
                _escape_dollars(value)
    elif isinstance(node, list):
        for value in node:
            _escape_dollars(value)


def _resolve(uri: str) -> Any:
    # The schemas refer to each other by relative names resolved against ids of several depths
    # (".../schema/", ".../schema/image/"); each file name is unique, so go by the name.
    return _schemas()[uri.rsplit("/", 1)[-1]]


@cache
def _validator(name: str) -> Callable[[Any], Any]:
    """A compiled validator: fastjsonschema generates Python code (~40 us per manifest where
    jsonschema takes ~2.4 ms)."""
    schema = dict(_schemas()[name])
    if name == "image-manifest-schema.json":
        # The image-spec says layers SHOULD have at least one entry; clients and the conformance
        # suite push manifests without layers (e.g. artifacts), so accept them.
        properties = dict(schema["properties"])
        properties["layers"] = {k: v for k, v in properties["layers"].items() if k != "minItems"}
        schema["properties"] = properties
    validate: Callable[[Any], Any] = fastjsonschema.compile(schema, handlers={"https": _resolve})
    return validate
