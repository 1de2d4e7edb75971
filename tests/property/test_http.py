"""Hostile request targets and query parameters against a real registry (both backends).

Every response is checked the same way (checks.spec_codes): never a 5xx, and every 4xx carries
the spec's JSON error envelope with spec codes. Where the outcome is predictable from the
spec's grammars, it is predicted exactly (the `*_outcome` oracles). Each test also fails if
anything appeared outside the registry's data directory (the `confined` fixture)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.api.helpers import digest_of, get_blob, push_blob, push_image, push_manifest, repo_name
from tests.property.checks import RawClient, Reply, spec_codes
from tests.property.strategies import (
    HOSTILE_TOKENS,
    HTTP,
    MAX_NAME_LENGTH,
    NAME_GRAMMAR,
    TAG_GRAMMAR,
    any_of,
    encode_exact,
    encode_raw,
    examples,
    hostile_text,
    valid_digests,
    valid_names,
    valid_tags,
)

pytestmark = pytest.mark.usefixtures("confined")

# Tags of the `tagged` repository: every first character class of the tag grammar.
TAGS = sorted(["0", "1.0", "9", "A", "Z", "_x", "a", "a-b", "a.b", "a_b", "latest", "v1", "zz"])


@dataclass
class Pushed:
    """A repository with an image (tag v1) and one extra blob."""

    name: str
    tag: str
    manifest: str
    blobs: frozenset[str]
    extra_blob: str


@pytest.fixture
def pushed(client: httpx.Client) -> Pushed:
    name = repo_name("property")
    body, digest = push_image(client, name, "v1")
    document = json.loads(body)
    blobs = {document["config"]["digest"]} | {layer["digest"] for layer in document["layers"]}
    _, extra = push_blob(client, name)
    return Pushed(name, "v1", digest, frozenset(blobs | {extra}), extra)


@pytest.fixture
def tagged(client: httpx.Client) -> str:
    """A repository with one image under all of TAGS."""
    name = repo_name("property")
    body, _ = push_image(client, name, TAGS[0])
    push_manifest(client, name, TAGS[1], body, params=[("tag", t) for t in TAGS[2:]])
    return name


def is_name(text: str) -> bool:
    return len(text) <= MAX_NAME_LENGTH and re.fullmatch(NAME_GRAMMAR, text) is not None


def is_tag(text: str) -> bool:
    return re.fullmatch(TAG_GRAMMAR, text) is not None


def is_digest(text: str) -> bool:
    return re.fullmatch(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}", text) is not None


def no_route(name: str, *segments: str) -> bool:
    """Requests no endpoint matches (404 UNSUPPORTED): aiohttp matches the name with `.+`
    (no newline) and other segments with `[^{}/]+`, after decoding all but %2F."""
    return not name or "\n" in name or any(not s or "{" in s or "}" in s for s in segments)


Outcome = dict[int, set[str]]  # allowed status -> allowed first error codes (empty: success)


def expect(reply: Reply, outcome: Outcome) -> list[str]:
    codes = spec_codes(reply)
    assert reply.status in outcome, (sorted(outcome), str(reply))
    if codes:
        assert codes[0] in outcome[reply.status], (outcome, str(reply))
    return codes


# --- Exact oracles: names and references are percent-encoded so the server decodes exactly
# the generated text (unicode lookalikes, NUL, newlines, `%`, `\`, `..` segments included).

EXISTING = "<existing>"  # stands for the pushed repository, tag or digest
names = st.one_of(any_of(valid_names), st.just(EXISTING))
references = st.one_of(any_of(valid_tags | valid_digests()), st.just(EXISTING))


def manifest_outcome(name: str, reference: str, pushed: Pushed) -> Outcome:
    if no_route(name, reference):
        return {404: {"UNSUPPORTED"}}
    if not is_name(name):
        return {400: {"NAME_INVALID"}}
    if is_tag(reference) or is_digest(reference):
        if name == pushed.name and reference in (pushed.tag, pushed.manifest):
            return {200: set()}
        return {404: {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}}
    if ":" in reference:
        return {400: {"DIGEST_INVALID"}}
    return {400: {"MANIFEST_INVALID"}}


@HTTP
@given(name=names, reference=references, method=st.sampled_from(["GET", "HEAD", "DELETE"]))
@example(name="a/../b", reference="latest", method="GET")
@example(name="..", reference="..", method="DELETE")
@example(name="a\\b", reference="v1\x00", method="GET")
@example(name="\u212a", reference="\uff56\uff11", method="GET")
def test_manifest_paths(
    raw: RawClient, pushed: Pushed, name: str, reference: str, method: str
) -> None:
    if name == EXISTING:
        name = pushed.name
        method = "GET" if method == "DELETE" else method  # keep the image for later examples
    if reference == EXISTING:
        reference = pushed.manifest if len(name) % 2 else pushed.tag
    target = f"/v2/{encode_exact(name, keep='/')}/manifests/{encode_exact(reference)}"
    expect(raw.request(method, target), manifest_outcome(name, reference, pushed))


def blob_outcome(name: str, digest: str, pushed: Pushed) -> Outcome:
    if no_route(name, digest):
        return {404: {"UNSUPPORTED"}}
    if not is_name(name):
        return {400: {"NAME_INVALID"}}
    if not is_digest(digest):
        return {400: {"DIGEST_INVALID"}}
    if name == pushed.name and digest in pushed.blobs:
        return {200: set(), 307: set()}  # 307: to S3, as the spec allows
    return {404: {"BLOB_UNKNOWN"}}


@HTTP
@given(
    name=names,
    digest=st.one_of(any_of(valid_digests()), st.just(EXISTING)),
    method=st.sampled_from(["GET", "HEAD", "DELETE"]),
)
@example(name="a", digest="sha256:" + "a" * 64 + "/..", method="GET")
@example(name="a", digest="sha256:../../../../etc/passwd", method="GET")
@example(name="a", digest="sha256:" + "\uff41" * 64, method="DELETE")
def test_blob_paths(raw: RawClient, pushed: Pushed, name: str, digest: str, method: str) -> None:
    if name == EXISTING:
        name = pushed.name
        method = "GET" if method == "DELETE" else method
    if digest == EXISTING:
        digest = pushed.extra_blob
    target = f"/v2/{encode_exact(name, keep='/')}/blobs/{encode_exact(digest)}"
    expect(raw.request(method, target), blob_outcome(name, digest, pushed))


@HTTP
@given(
    name=any_of(valid_names),
    upload_id=st.one_of(hostile_text, st.uuids().map(str)),
    method=st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]),
)
@example(name="a", upload_id="../../../../tmp/x", method="PATCH")
@example(name="a", upload_id="..", method="PUT")
@example(name="a", upload_id="%2e%2e%2fblobs", method="DELETE")
def test_upload_session_paths(raw: RawClient, name: str, upload_id: str, method: str) -> None:
    target = f"/v2/{encode_exact(name, keep='/')}/blobs/uploads/{encode_exact(upload_id)}"
    if method == "PUT":
        target += "?digest=" + encode_exact(digest_of(b"x"))
    reply = raw.request(method, target, b"x" if method in ("PATCH", "PUT") else None)
    if no_route(name, upload_id):
        outcome = {404: {"UNSUPPORTED"}, 405: {"UNSUPPORTED"}}
    elif not is_name(name):
        outcome = {400: {"NAME_INVALID"}}
    else:
        outcome = {404: {"BLOB_UPLOAD_UNKNOWN"}}
    expect(reply, outcome)


# --- Raw targets: `..`, `\`, malformed and double percent-encodings reach the server as written.

raw_segments = st.lists(st.sampled_from(HOSTILE_TOKENS) | hostile_text, min_size=1, max_size=4).map(
    "".join
)
ENDPOINTS = [
    ("GET", "/v2/{}/manifests/{}"),
    ("HEAD", "/v2/{}/manifests/{}"),
    ("PUT", "/v2/{}/manifests/{}"),
    ("DELETE", "/v2/{}/manifests/{}"),
    ("GET", "/v2/{}/blobs/{}"),
    ("DELETE", "/v2/{}/blobs/{}"),
    ("POST", "/v2/{}/blobs/uploads/{}"),
    ("PATCH", "/v2/{}/blobs/uploads/{}"),
    ("PUT", "/v2/{}/blobs/uploads/{}?digest=" + digest_of(b"{}")),
    ("GET", "/v2/{}/referrers/{}"),
    ("GET", "/v2/{}/tags/list?last={}"),
    ("GET", "/v2/_catalog?n=1&last={}{}"),
    ("GET", "/v2/{}/{}"),
    ("GET", "/{}{}"),
]


@HTTP
@given(endpoint=st.sampled_from(ENDPOINTS), first=raw_segments, second=raw_segments)
@example(endpoint=ENDPOINTS[0], first="../../..", second="..")
@example(endpoint=ENDPOINTS[6], first="..%2f..%2f..%2ftmp", second="")
@example(endpoint=ENDPOINTS[7], first="a", second="..\\..\\..\\x")
@example(endpoint=ENDPOINTS[8], first="a", second="%2e%2e%2f%2e%2e%2fx")
def test_raw_targets(raw: RawClient, endpoint: tuple[str, str], first: str, second: str) -> None:
    method, template = endpoint
    if template.endswith("uploads/{}") and method == "POST":
        template, second = "/v2/{}/blobs/uploads/{}", ""
    target = template.format(encode_raw(first), encode_raw(second))
    body = b"{}" if method in ("PUT", "PATCH", "POST") else None
    reply = raw.request(method, target, body)
    spec_codes(reply)
    if reply.status == 202 and method == "POST":  # a valid name after all: drop the session
        assert raw.request("DELETE", reply.headers["Location"]).status == 204


# --- Query parameters


def page_limit(n: str) -> int:
    digits = n.lstrip("0")
    return 10**9 if len(digits) > 9 else int(digits or "0")


page_sizes = st.one_of(
    st.integers(0, 20).map(str),
    st.from_regex(r"[0-9]{1,30}", fullmatch=True),
    any_of(st.integers(0, 99).map(str)),
    st.integers(4200, 5000).map(lambda k: "9" * k),  # past Python's int() digit limit (4300)
    st.sampled_from(["", "-1", "+1", "1e3", "0x10", " 1", "1 ", "\uff11", "\u0661", "\u00b9"]),
)
lasts = st.none() | hostile_text | st.sampled_from(TAGS) | st.sampled_from(["", "\x00", "a\x00"])


def query(**params: str | None) -> str:
    pairs = [f"{k}={encode_exact(v)}" for k, v in params.items() if v is not None]
    return "?" + "&".join(pairs) if pairs else ""


def n_is_valid(n: str | None) -> bool:
    return n is None or n == "" or (n.isascii() and n.isdigit())


@HTTP
@given(n=st.none() | page_sizes, last=lasts)
@example(n="9" * 4301, last=None)
def test_tag_list_pages(raw: RawClient, tagged: str, n: str | None, last: str | None) -> None:
    reply = raw.request("GET", f"/v2/{tagged}/tags/list" + query(n=n, last=last))
    codes = spec_codes(reply)
    if not n_is_valid(n):
        assert (reply.status, codes) == (400, ["UNSUPPORTED"]), str(reply)
        return
    assert reply.status == 200, str(reply)
    after = [t for t in TAGS if last is None or t.encode() > last.encode()]
    limit = page_limit(n) if n else None
    assert json.loads(reply.body) == {"name": tagged, "tags": after[:limit]}, (limit, last)
    more = limit is not None and 0 < limit < len(after)
    assert ("Link" in reply.headers) == more, str(reply)


@HTTP
@given(n=st.none() | page_sizes, last=lasts)
@example(n="9" * 4301, last=None)
def test_catalog_pages(raw: RawClient, tagged: str, n: str | None, last: str | None) -> None:
    reply = raw.request("GET", "/v2/_catalog" + query(n=n, last=last))
    codes = spec_codes(reply)
    if not n_is_valid(n):
        assert (reply.status, codes) == (400, ["UNSUPPORTED"]), str(reply)
        return
    assert reply.status == 200, str(reply)
    repositories = json.loads(reply.body)["repositories"]
    keys = [r.encode() for r in repositories]
    assert keys == sorted(set(keys)), repositories
    assert all(is_name(r) for r in repositories), repositories
    if last is not None:
        assert all(key > last.encode() for key in keys), (last, repositories)
    assert len(repositories) <= (min(page_limit(n), 10_000) if n else 100)


FRESH = "<fresh>"  # a new, valid repository name


@HTTP
@given(
    name=st.one_of(st.just(FRESH), st.just(EXISTING), any_of(valid_names)),
    digest=st.none() | st.just("<body>") | any_of(valid_digests()),
    mount=st.none() | st.just(EXISTING) | any_of(valid_digests()),
    source=st.none() | st.just(EXISTING) | any_of(valid_names),
    algorithm=st.none() | st.sampled_from(["sha256", "sha512", ""]) | hostile_text,
    body=st.binary(max_size=64),
)
@example(name=FRESH, digest=None, mount=EXISTING, source="../../..", algorithm=None, body=b"")
@example(name=FRESH, digest="<body>", mount=None, source=None, algorithm="sha512", body=b"x")
def test_start_upload_parameters(
    raw: RawClient,
    client: httpx.Client,
    pushed: Pushed,
    name: str,
    digest: str | None,
    mount: str | None,
    source: str | None,
    algorithm: str | None,
    body: bytes,
) -> None:
    name = {FRESH: repo_name("property"), EXISTING: pushed.name}.get(name, name)
    mount = pushed.extra_blob if mount == EXISTING else mount
    source = pushed.name if source == EXISTING else source
    if digest == "<body>":
        digest = digest_of(body, algorithm if algorithm in ("sha256", "sha512") else "sha256")
    target = f"/v2/{encode_exact(name, keep='/')}/blobs/uploads/" + query(
        digest=digest, mount=mount, **{"from": source, "digest-algorithm": algorithm}
    )
    reply = raw.request("POST", target, body)
    codes = spec_codes(reply)

    mounted = 201 if mount in pushed.blobs else None
    body_digests = {digest_of(body, "sha256"), digest_of(body, "sha512")}
    outcome: Outcome
    if no_route(name):
        outcome = {404: {"UNSUPPORTED"}}
    elif not is_name(name) or (mount and source and not is_name(source)):
        outcome = {400: {"NAME_INVALID"}}
    elif mount and not is_digest(mount):
        outcome = {400: {"DIGEST_INVALID"}}
    elif mounted:
        outcome = {201: set()}
    elif algorithm not in (None, "", "sha256", "sha512"):
        outcome = {400: {"DIGEST_INVALID"}}
    elif digest is None:
        outcome = {202: set()}
    elif digest in body_digests:
        outcome = {201: set()}
    else:
        outcome = {400: {"DIGEST_INVALID"}}
    assert reply.status in outcome, (outcome, str(reply))
    if codes:
        assert codes[0] in outcome[reply.status], (outcome, str(reply))

    if reply.status == 201:
        stored = reply.headers["Docker-Content-Digest"]
        assert stored == (mount if mounted else digest), str(reply)
        _, content = get_blob(client, name, stored)
        algorithm_name, _, hexdigest = stored.partition(":")
        assert hashlib.new(algorithm_name, content).hexdigest() == hexdigest
    if reply.status == 202:
        assert raw.request("DELETE", reply.headers["Location"]).status == 204


# --- Content-Range of a PATCH

header_texts = st.one_of(
    hostile_text,
    st.builds(
        "{}{}-{}{}".format,
        st.sampled_from(["", "bytes=", "bytes ", "BYTES="]),
        st.integers(-1, 3) | st.sampled_from(["", "00", "\uff10", "99999999999999999999"]),
        st.integers(-1, 70) | st.sampled_from(["", "\uff15", "9" * 19, "9" * 20]),
        st.sampled_from(["", "/*", "/64", "/", "/x", " "]),
    ),
).filter(lambda text: not any((c < " " and c != "\t") or c == "\x7f" for c in text))
# (Control characters in a header are refused by aiohttp's parser before the application sees
# the request: test_protocol_errors covers that.)


@HTTP
@given(content_range=st.none() | header_texts, data=st.binary(min_size=1, max_size=64))
@example(content_range="\uff10-\uff14", data=b"hello")
@example(content_range="0-" + "9" * 19, data=b"hello")
def test_patch_content_range(
    raw: RawClient, pushed: Pushed, content_range: str | None, data: bytes
) -> None:
    if content_range is None:
        content_range = f"0-{len(data) - 1}"
    started = raw.request("POST", f"/v2/{pushed.name}/blobs/uploads/")
    assert started.status == 202, str(started)
    location = started.headers["Location"]
    headers: dict[str, str | bytes] = {"Content-Type": "application/octet-stream"}
    reply = raw.request(
        "PATCH", location, data, {**headers, "Content-Range": content_range.encode()}
    )
    codes = spec_codes(reply)
    # What the header says, read leniently (prefix, total, surrounding whitespace).
    numbers = re.fullmatch(
        r"(?:bytes[= ])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?", content_range.strip(), re.ASCII
    )
    describes_chunk = (
        numbers is not None and int(numbers[1]) == 0 == int(numbers[2]) - len(data) + 1
    )
    if reply.status == 202:
        # An empty header is no header (aiohttp strips spaces and tabs).
        assert describes_chunk or not content_range.strip(" \t"), (content_range, str(reply))
        assert reply.headers["Range"] == f"0-{len(data) - 1}"
    else:
        assert content_range != f"0-{len(data) - 1}", str(reply)  # the spec's own form
        assert set(codes) <= {"BLOB_UPLOAD_INVALID", "SIZE_INVALID"}, str(reply)
        status = raw.request("GET", location)
        assert status.status == 204 and status.headers["Range"] == "0-0", str(status)
    assert raw.request("DELETE", location).status == 204


# --- What aiohttp's HTTP parser refuses before the application sees the request

protocol_errors = st.one_of(
    st.builds(
        lambda c: ("GET", "/v2/", {"X-Junk": f"a{c}b".encode("latin-1")}),
        st.sampled_from([chr(i) for i in range(0x20) if chr(i) not in "\t\n\r"] + ["\x7f"]),
    ),
    st.builds(lambda k: ("GET", "/v2/" + "a" * k + "/tags/list", {}), st.integers(8190, 9000)),
    st.builds(lambda k: ("GET", "/v2/", {"X-Junk": "x" * k}), st.integers(8190, 9000)),
    st.sampled_from([("GET", "*", {}), ("GET", "v2/", {}), ("GET", "//\\", {})]),
)


@settings(HTTP, max_examples=examples(15))
@given(garbage=protocol_errors)
def test_protocol_errors(raw: RawClient, garbage: tuple[str, str, dict[str, str | bytes]]) -> None:
    """Malformed requests are refused with a 4xx, never a 5xx. aiohttp's HTTP parser answers
    these before cargobay sees them, with a plain-text body (the spec allows any body for a
    4xx: "If the response body is in JSON format, it MUST have the following format"); a spec
    error code on these too is left for issue 7."""
    method, target, headers = garbage
    reply = raw.request(method, target, None, headers)
    assert 400 <= reply.status < 500, str(reply)
