"""Properties of the parsers that see raw client input: digests, repository names, tags, upload
Content-Range. Each either returns a value that satisfies the spec's grammar (and round-trips),
or raises the registry's typed error (rendered as a spec error); never anything else."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cargobay.errors import DigestInvalid, NameInvalid, RangeInvalid, RegistryError, TagInvalid
from cargobay.registry.digest import Digest
from cargobay.registry.names import check_name, check_tag, is_tag
from cargobay.registry.uploads import ChunkRange
from tests.property.strategies import (
    DIGEST_GRAMMAR,
    ENCODED_LENGTH,
    MAX_NAME_LENGTH,
    NAME_GRAMMAR,
    TAG_GRAMMAR,
    any_of,
    examples,
    hostile_text,
    names_from_grammar,
    names_from_regex,
    valid_digests,
    valid_names,
    valid_tags,
)

FAST = settings(max_examples=examples(400), deadline=None)

# Lone surrogates do not survive UTF-8, so they never arrive over HTTP; the parsers must not
# care either way.
with_surrogates = st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=20)


def no_path_tricks(value: str) -> None:
    """What an accepted name, tag or digest can never contain, whatever the grammar says."""
    assert value.isascii() and value.isprintable(), value
    assert "\\" not in value and "%" not in value and "\x00" not in value, value
    assert not value.startswith("/") and "//" not in value, value
    assert all(part not in ("", ".", "..") for part in value.split("/")), value


# --- Digests


@FAST
@given(any_of(valid_digests()) | with_surrogates)
@example("sha256:" + "a" * 64 + "\n")
@example("sha256:" + "A" * 64)
@example("sha256:" + "\uff41" * 64)
@example("sha256:" + "a" * 64 + "\x00")
@example("sha256:../../" + "a" * 58)
@example("sha512:" + "a" * 64)
@example("SHA256:" + "a" * 64)
def test_digest_parse_accepts_only_the_grammar(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except DigestInvalid as error:
        assert error.code == "DIGEST_INVALID" and error.status == 400
        return
    assert str(digest) == text
    assert re.fullmatch(DIGEST_GRAMMAR, text)
    assert re.fullmatch(f"[a-f0-9]{{{ENCODED_LENGTH[digest.algorithm]}}}", digest.encoded)
    assert Digest.parse(str(digest)) == digest
    no_path_tricks(text)


@FAST
@given(valid_digests())
def test_valid_digests_are_accepted(text: str) -> None:
    digest = Digest.parse(text)
    assert str(digest) == text
    assert digest.algorithm in ENCODED_LENGTH


@FAST
@given(valid_digests(), st.integers(0, 127), st.sampled_from("AFG:/.\n \x00"))
def test_digest_with_one_bad_character_is_refused(text: str, at: int, bad: str) -> None:
    """Upper-case hex, a stray separator or whitespace anywhere in the encoded part."""
    prefix, _, encoded = text.partition(":")
    at %= len(encoded)
    with pytest.raises(DigestInvalid):
        Digest.parse(f"{prefix}:{encoded[:at]}{bad}{encoded[at + 1 :]}")


# --- Repository names


@FAST
@given(any_of(valid_names) | with_surrogates)
@example("a" * (MAX_NAME_LENGTH + 1))
@example("a/../b")
@example("a/./b")
@example("a//b")
@example("/a")
@example("a/")
@example("a\\b")
@example("a\x00")
@example("a\n")
@example("\u212aelvin")  # Kelvin sign: lowercases to ASCII "k"
@example("\u0430lpine")  # Cyrillic a
@example("alp\u0131ne")  # dotless i
@example("a%2fb")
@example("a___b")
@example("a.-b")
def test_check_name_accepts_only_the_grammar(text: str) -> None:
    try:
        result = check_name(text)
    except NameInvalid as error:
        assert error.code == "NAME_INVALID" and error.status == 400
        return
    assert result == text
    assert re.fullmatch(NAME_GRAMMAR, text)
    assert len(text) <= MAX_NAME_LENGTH
    no_path_tricks(text)


@FAST
@given(valid_names)
def test_valid_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@settings(max_examples=examples(40), deadline=None)
@given(names_from_regex)
def test_names_generated_by_the_spec_regex_are_accepted(name: str) -> None:
    """A cross-check of `valid_names` against hypothesis' own reading of the spec regex."""
    assert_accepted_up_to_the_length_guard(name)


@FAST
@given(st.lists(names_from_grammar, min_size=2, max_size=6).map("/".join))
def test_joined_valid_names_are_accepted_up_to_the_length_guard(name: str) -> None:
    assert_accepted_up_to_the_length_guard(name)


def assert_accepted_up_to_the_length_guard(name: str) -> None:
    if len(name) <= MAX_NAME_LENGTH:
        assert check_name(name) == name
    else:
        with pytest.raises(NameInvalid):
            check_name(name)


# --- Tags


@FAST
@given(any_of(valid_tags) | with_surrogates)
@example("a" * 128)
@example("a" * 129)
@example(".hidden")
@example("-x")
@example("..")
@example("v1\n")
@example("v1\x00")
@example("\uff56\uff11")  # fullwidth "v1"
@example("sha256:" + "a" * 64)
def test_check_tag_accepts_only_the_grammar(text: str) -> None:
    assert is_tag(text) == bool(re.fullmatch(TAG_GRAMMAR, text))
    try:
        result = check_tag(text)
    except TagInvalid as error:
        assert isinstance(error, RegistryError)
        assert error.code == "MANIFEST_INVALID" and error.status == 400
        assert not is_tag(text)
        return
    assert result == text and is_tag(text)
    assert 1 <= len(text) <= 128
    no_path_tricks(text)


@FAST
@given(valid_tags)
def test_valid_tags_are_accepted(tag: str) -> None:
    assert check_tag(tag) == tag


@FAST
@given(valid_tags | valid_digests())
def test_a_reference_is_a_tag_or_a_digest_never_both(reference: str) -> None:
    """The manifest endpoints decide tag versus digest with is_tag first: a digest must never
    pass as a tag, or `GET /manifests/sha256:...` would look up a tag."""
    is_digest = ":" in reference
    assert is_tag(reference) != is_digest


# --- Content-Range of upload chunks

content_ranges = st.one_of(
    hostile_text,
    st.builds(
        "{}{}-{}{}".format,
        st.sampled_from(["", "bytes=", "bytes ", " ", "bytes=\t", "BYTES=", "bytes:"]),
        st.integers(-5, 2**70) | st.sampled_from(["", "0x1", "\uff11", "\u0661", "1e3", "+1"]),
        st.integers(-5, 2**70) | st.sampled_from(["", "0x1", "\uff12", "\u0662", "-1"]),
        st.sampled_from(["", "/*", "/10", "/", "/-1", "/\uff11", "\n", "\x00", "/1/2", " "]),
    ),
)


@FAST
@given(content_ranges | with_surrogates)
@example("0-" + "9" * 19)
@example("0-" + "9" * 20)
@example("\uff10-\uff14")
@example("\u0660-\u0664")
@example("5-3")
@example("0-0")
@example("bytes=0-4/*")
@example("0-4\n")
def test_content_range_parse(text: str) -> None:
    try:
        chunk = ChunkRange.parse(text)
    except RangeInvalid as error:
        assert error.code == "BLOB_UPLOAD_INVALID" and error.status == 416
        return
    assert 0 <= chunk.start <= chunk.end
    assert chunk.length == chunk.end - chunk.start + 1 >= 1
    # Only ASCII digits count, and what was parsed is what was written.
    match = re.fullmatch(r"(?:bytes[= ])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?", text.strip())
    assert match is not None, text
    assert (int(match[1]), int(match[2])) == (chunk.start, chunk.end)


@FAST
@given(st.integers(0, 10**18), st.integers(0, 10**18))
def test_content_range_round_trips(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    for text in (f"{start}-{end}", f"bytes={start}-{end}", f"bytes {start}-{end}/*"):
        assert ChunkRange.parse(text) == ChunkRange(start, end)
