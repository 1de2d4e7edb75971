"""Hostile manifest bodies and references against a real registry (both backends).

Anything that is not a valid manifest gets 400 (413 when too large) with MANIFEST_INVALID (or
MANIFEST_BLOB_UNKNOWN / DIGEST_INVALID where that is the precise reason), never a 5xx; valid
manifests are stored and served byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from cargobay.config import RegistryConfig
from tests.api.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    repo_name,
)
from tests.property.checks import RawClient, Reply, spec_codes
from tests.property.strategies import (
    HTTP,
    TAG_GRAMMAR,
    any_of,
    dumps,
    encode_exact,
    examples,
    json_values,
    valid_digests,
    valid_tags,
)

pytestmark = pytest.mark.usefixtures("confined")

MAX_MANIFEST_BYTES = RegistryConfig().max_manifest_bytes  # the registry_server runs the default

# Fixed blobs, so the valid manifest (and the strategies built from it) are constants.
CONFIG = b'{"property":"config"}'
LAYER = b"property layer"
DOCUMENT = image_manifest(CONFIG, [LAYER])
BODY = canonical(DOCUMENT)

CONTENT_TYPES = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    "text/plain",
    "",
]


@pytest.fixture
def repo(client: httpx.Client) -> str:
    """A repository holding the config and layer of DOCUMENT."""
    name = repo_name("property")
    push_blob(client, name, CONFIG)
    push_blob(client, name, LAYER)
    return name


def put(
    raw: RawClient,
    name: str,
    reference: str,
    body: bytes,
    content_type: str | None = OCI_MANIFEST,
    tags: list[str] | None = None,
) -> Reply:
    target = f"/v2/{name}/manifests/{encode_exact(reference)}"
    if tags:
        target += "?" + "&".join(f"tag={encode_exact(t)}" for t in tags)
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return raw.request("PUT", target, body, headers)


def assert_stored(
    raw: RawClient, name: str, reference: str, body: bytes, digest: str | None = None
) -> None:
    """GET by reference and by digest (sha256 unless pushed by another) answer exactly the
    pushed bytes."""
    digest = digest or digest_of(body)
    for ref in (reference, digest):
        got = raw.request("GET", f"/v2/{name}/manifests/{encode_exact(ref)}")
        assert got.status == 200, str(got)
        assert got.body == body
        assert got.headers["Docker-Content-Digest"] == digest


def assert_refused(reply: Reply, *codes: str) -> None:
    found = spec_codes(reply)
    assert 400 <= reply.status < 500 and found, str(reply)
    assert found[0] in (codes or ("MANIFEST_INVALID",)), str(reply)


# --- Arbitrary JSON


@HTTP
@given(value=json_values(), content_type=st.sampled_from(CONTENT_TYPES))
@example(value={"schemaVersion": 1}, content_type=OCI_MANIFEST)
@example(value={"schemaVersion": "2", "manifests": []}, content_type=OCI_INDEX)
@example(value={"schemaVersion": 2.5, "manifests": []}, content_type="")
@example(value=[DOCUMENT], content_type=OCI_MANIFEST)
@example(value={"schemaVersion": float("nan"), "manifests": []}, content_type=OCI_INDEX)
def test_arbitrary_json_is_refused(
    raw: RawClient, repo: str, value: Any, content_type: str
) -> None:
    """Any JSON value that is not an object with schemaVersion 2 cannot be a manifest."""
    assume(not (isinstance(value, dict) and value.get("schemaVersion") == 2))
    assert_refused(put(raw, repo, "t", dumps(value), content_type))


# --- A valid manifest with one field of the wrong type or value


def _not_two(v: Any) -> bool:
    return not (isinstance(v, int | float) and not isinstance(v, bool) and v == 2)


def _bad_size(v: Any) -> bool:
    """Not an int64 (draft-04 `integer`: 14.0 is not one). Negative sizes are within the
    schema, so they are not asserted here."""
    return isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63


WRONG: dict[tuple[str | int, ...], Any] = {
    ("schemaVersion",): _not_two,
    ("mediaType",): lambda v: v != OCI_MANIFEST,
    ("config",): lambda v: not isinstance(v, dict),
    ("config", "digest"): lambda v: v != DOCUMENT["config"]["digest"],
    ("config", "size"): _bad_size,
    ("config", "mediaType"): lambda v: not isinstance(v, str),
    ("config", "annotations"): lambda v: not isinstance(v, dict),
    ("layers",): lambda v: not isinstance(v, list),
    ("layers", 0): lambda v: not isinstance(v, dict),
    ("layers", 0, "digest"): lambda v: v != DOCUMENT["layers"][0]["digest"],
    ("layers", 0, "size"): _bad_size,
    ("layers", 0, "urls"): lambda v: not isinstance(v, list),
    ("annotations",): lambda v: not isinstance(v, dict),
    ("annotations", "k"): lambda v: not isinstance(v, str),
    ("subject",): lambda v: not isinstance(v, dict),
    ("artifactType",): lambda v: not isinstance(v, str),
}


def _replace(document: Any, path: tuple[str | int, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return copy


@HTTP
@given(path=st.sampled_from(sorted(WRONG, key=str)), value=json_values(max_leaves=10))
@example(path=("config", "size"), value=2**63)
@example(path=("layers", 0, "size"), value=-(2**63) - 1)
@example(path=("config", "digest"), value="sha256:" + "A" * 64)
@example(path=("config", "digest"), value="sha256:../../../etc/passwd")
@example(path=("schemaVersion",), value=True)
def test_wrong_fields_are_refused(raw: RawClient, repo: str, path: Any, value: Any) -> None:
    assume(WRONG[path](value))
    body = dumps(_replace(DOCUMENT, path, value))
    reply = put(raw, repo, "wrong", body)
    if path[-1] == "digest":
        # A well-formed digest of a blob the repository does not have: MANIFEST_BLOB_UNKNOWN.
        assert_refused(reply, "MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN")
    else:
        assert_refused(reply)


# --- The bytes of a valid manifest, tampered with

INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",  # truncated 2-byte sequence
    b"\xc0\xae",  # overlong "."
    b"\xe0\x80\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # a UTF-16 surrogate, encoded (CESU-8)
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xf8\x88\x80\x80\x80",
]
UTF16_32 = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@HTTP
@given(
    bad=st.sampled_from(INVALID_UTF8),
    inside_string=st.booleans(),
    where=st.integers(0, len(BODY)),
    prefix=st.text(max_size=4),
)
@example(bad=b"\xed\xa0\x80", inside_string=True, where=0, prefix="")
def test_invalid_utf8_is_refused(
    raw: RawClient, repo: str, bad: bytes, inside_string: bool, where: int, prefix: str
) -> None:
    if inside_string:
        document = {**DOCUMENT, "annotations": {"k": prefix + "\x01"}}
        body = canonical(document).replace(b"\\u0001", bad)
    else:
        body = BODY[:where] + bad + BODY[where:]
    assert_refused(put(raw, repo, "utf8", body))


@HTTP
@given(encoding=st.sampled_from(UTF16_32))
def test_utf16_and_utf32_are_refused(raw: RawClient, repo: str, encoding: str) -> None:
    """RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8. (Python's json.loads(bytes)
    also reads UTF-16 and UTF-32; Go clients would not.)"""
    assert_refused(put(raw, repo, "utf16", BODY.decode().encode(encoding)))


duplicate_keys = st.builds(
    lambda key, value: BODY[:-1] + b',"' + key.encode() + b'":' + dumps(value) + b"}",
    st.sampled_from(["mediaType", "config", "layers", "schemaVersion", "annotations", "subject"]),
    json_values(max_leaves=8) | st.just(DOCUMENT["config"]) | st.just(OCI_MANIFEST),
)


@HTTP
@given(body=duplicate_keys)
def test_duplicate_keys_are_refused_or_kept_byte_for_byte(
    raw: RawClient, repo: str, body: bytes
) -> None:
    """Python keeps the last of duplicate keys (Go too): either way, what was accepted is what
    is served, and the refusal is a manifest error."""
    reply = put(raw, repo, "dup", body)
    if reply.status == 201:
        assert_stored(raw, repo, "dup", body)
    else:
        assert_refused(reply, "MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN")


@st.composite
def broken_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["nested", "objects", "array", "truncated", "trailing", "nul"]))
    if kind in ("nested", "objects"):
        depth = draw(st.integers(1, 200_000))
        inner = b"[" * depth + b"]" * depth
        if kind == "objects":
            inner = b'{"a":' * depth + b"1" + b"}" * depth
        return BODY[:-1] + b',"annotations":{"k":' + inner + b"}}"
    if kind == "array":
        count = draw(st.integers(1, 300_000))
        item = draw(st.sampled_from([b"0", b"null", b'"x"', b"[]", b"{}"]))
        return BODY.replace(b'"layers":[', b'"layers":[' + b",".join([item] * count) + b",")
    if kind == "truncated":
        return BODY[: draw(st.integers(0, len(BODY) - 1))]
    if kind == "trailing":
        return BODY + draw(st.binary(max_size=8).map(lambda extra: b"x" + extra))
    return BODY[:-1] + b',"k\x00":"\x00"}'  # raw NUL: a control character, not JSON


@HTTP
@given(body=broken_bodies())
def test_broken_bodies_are_refused(raw: RawClient, repo: str, body: bytes) -> None:
    assert_refused(put(raw, repo, "broken", body))


def test_byte_order_mark_is_ignored_or_refused(raw: RawClient, repo: str) -> None:
    """RFC 8259 §8.1: parsers MAY ignore a byte order mark rather than treating it as an
    error; either way nothing else changes."""
    body = b"\xef\xbb\xbf" + BODY
    reply = put(raw, repo, "bom", body)
    if reply.status == 201:
        assert_stored(raw, repo, "bom", body)
    else:
        assert_refused(reply)


@settings(HTTP, max_examples=examples(6))
@given(delta=st.sampled_from([-1, 0, 1]), chunked=st.booleans())
def test_size_limit(client: httpx.Client, repo: str, delta: int, chunked: bool) -> None:
    """max_manifest_bytes is accepted (padded with JSON whitespace), one byte more is 413."""
    size = MAX_MANIFEST_BYTES + delta
    body = BODY + b" " * (size - len(BODY))
    content: Any = iter([body[: size // 2], body[size // 2 :]]) if chunked else body
    r = client.put(
        f"/v2/{repo}/manifests/big",
        content=content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    if size > MAX_MANIFEST_BYTES:
        assert r.status_code == 413, (r.status_code, r.text[:300])
        assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID", r.text[:300]
    else:
        assert r.status_code == 201, (r.status_code, r.text[:300])
        got = client.get(f"/v2/{repo}/manifests/big")
        assert got.content == body


# --- Valid manifests: stored and served byte for byte

surrogate_or_any = st.characters(categories=["Cs"]) | st.characters()
annotation_texts = st.text(surrogate_or_any, max_size=12) | st.sampled_from(
    ["", "\x00", "a\x00b", "\u2028", "\\", '"', "\ufeff", "\U0001f4a9", "\\u0000"]
)


@HTTP
@given(
    annotations=st.dictionaries(annotation_texts, annotation_texts, max_size=5),
    layout=st.fixed_dictionaries(
        {
            "ensure_ascii": st.booleans(),
            "indent": st.sampled_from([None, 0, 2, "\t"]),
            "sort_keys": st.booleans(),
        }
    ),
    with_subject=st.booleans(),
)
def test_valid_manifests_are_served_byte_for_byte(
    raw: RawClient,
    repo: str,
    annotations: dict[str, str],
    layout: dict[str, Any],
    with_subject: bool,
) -> None:
    """Random annotations (NUL, lone surrogates as \\u escapes, any unicode), any JSON layout;
    with a subject the referrers API returns the same annotations."""
    subject = descriptor(OCI_MANIFEST, uuid.uuid4().bytes)  # a referrers list of its own
    document = image_manifest(CONFIG, [LAYER], annotations=annotations)
    if with_subject:
        document["subject"] = subject
    surrogates = any(
        0xD800 <= ord(c) <= 0xDFFF for pair in annotations.items() for c in "".join(pair)
    )
    if surrogates:
        layout["ensure_ascii"] = True  # a lone surrogate only exists in JSON as an escape
    body = json.dumps(document, **layout).encode()
    reply = put(raw, repo, "valid", body)
    if surrogates and reply.status != 201:  # not a Unicode string: refusing it is fine too
        assert_refused(reply)
        return
    assert reply.status == 201, str(reply)
    assert reply.headers["Docker-Content-Digest"] == digest_of(body)
    assert_stored(raw, repo, "valid", body)
    if with_subject:
        listing = raw.request("GET", f"/v2/{repo}/referrers/{subject['digest']}")
        assert listing.status == 200, str(listing)
        found = json.loads(listing.body)["manifests"]
        assert [m["digest"] for m in found] == [digest_of(body)], found
        assert found[0].get("annotations", {}) == annotations


# --- References and ?tag= on PUT

BODY_DIGESTS = {digest_of(BODY), digest_of(BODY, "sha512")}


def is_tag(text: str) -> bool:
    return re.fullmatch(TAG_GRAMMAR, text) is not None


@HTTP
@given(
    reference=any_of(valid_tags) | st.sampled_from(sorted(BODY_DIGESTS)) | valid_digests(),
    tags=st.lists(any_of(valid_tags), max_size=3),
)
@example(reference="..", tags=[])
@example(reference="v1", tags=["../../x"])
@example(reference="sha256:" + hashlib.sha256(BODY).hexdigest().upper(), tags=[])
def test_references_and_tags_on_put(
    raw: RawClient, repo: str, reference: str, tags: list[str]
) -> None:
    reply = put(raw, repo, reference, BODY, tags=tags)
    codes = spec_codes(reply)
    if not reference or "{" in reference or "}" in reference:
        assert (reply.status, codes) == (404, ["UNSUPPORTED"]), str(reply)
        return
    if not all(is_tag(t) for t in tags) or not (is_tag(reference) or ":" in reference):
        assert (reply.status, codes) == (400, ["MANIFEST_INVALID"]), str(reply)
        return
    if not is_tag(reference) and reference not in BODY_DIGESTS:
        assert (reply.status, codes) == (400, ["DIGEST_INVALID"]), str(reply)
        return
    assert reply.status == 201, str(reply)
    expected = list(dict.fromkeys(tags))
    if is_tag(reference) and reference not in expected:
        expected.insert(0, reference)
    assert reply.headers.get_all("OCI-Tag", []) == expected, str(reply)
    pushed_as = reference if reference in BODY_DIGESTS else digest_of(BODY)
    assert reply.headers["Docker-Content-Digest"] == pushed_as, str(reply)
    for tag in expected:
        assert_stored(raw, repo, tag, BODY, pushed_as)
