"""Hypothesis strategies shared by the property tests: hostile text, and valid values generated
from the distribution-spec grammars."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def examples(count: int) -> int:
    """max_examples, times PROPERTY_SCALE (default 1) for a longer hunt."""
    return count * int(os.environ.get("PROPERTY_SCALE", "1"))


# The grammars of the distribution spec ("Pulling manifests") and the image spec (digests).
NAME_GRAMMAR = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
TAG_GRAMMAR = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
DIGEST_GRAMMAR = r"[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"
ENCODED_LENGTH = {"sha256": 64, "sha512": 128}
MAX_NAME_LENGTH = 255  # cargobay's documented guard (registry/names.py)

# Pieces an attacker reaches for: traversal, encodings of it, separators, control characters,
# unicode lookalikes of `.`, `/`, `\` and of ASCII letters and digits, case-folding traps.
HOSTILE_TOKENS = [
    "..", ".", "...", "./", "../", "..\\", "\\", "/", "//", "~", "-", "_", "__", ":", "@",
    "%2e%2e", "%2E%2E", "%2e", ".%2e", "%2f", "%2F", "%5c", "%5C", "%00", "%0a", "%0d%0a",
    "%", "%%", "%zz", "%c0%ae%c0%ae", "%c0%af", "%e0%80%ae", "%252e%252e", "%252f", "%u002e",
    "\x00", "\n", "\r\n", "\t", " ", "\x7f", "?", "#", ";", "&", "=", "+", "{", "}", "*",
    "\u2024", "\u2025", "\uff0e", "\u3002", "\u2215", "\u2044", "\uff0f", "\u29f8", "\uff3c",
    "\u0430", "\u0131", "\u0130", "\u212a", "\u017f", "\uff41", "\uff10", "\u0661", "\u00b9",
    "\ufeff", "\u200b", "\u202e", "\u0301", "\U0001f4a9", "\ufffd",
    "etc/passwd", "C:\\Windows", "file:", "sha256:", "sha512:", "a" * 64, "0" * 128,
    "library", "alpine", "latest", "v1.0",
]  # fmt: skip

# No lone surrogates: they cannot be sent as UTF-8 (the parser tests add them separately).
hostile_char = st.one_of(
    st.sampled_from("abz09.-_/\\:%"),
    st.characters(codec="ascii"),
    st.characters(exclude_categories=["Cs"]),
)
hostile_text = st.one_of(
    st.text(hostile_char, max_size=40),
    st.lists(st.sampled_from(HOSTILE_TOKENS) | st.text(hostile_char, max_size=6), max_size=8).map(
        "".join
    ),
    st.builds(
        lambda t, k: t * k, st.sampled_from(["a", "a/", "..", "9", "\u0430"]), st.integers(1, 300)
    ),
)

# from_regex(NAME_GRAMMAR) costs ~50 ms an example (nested repetitions): fine for a cross-check,
# too slow for the bulk. This builds the same language directly.
_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_separator = st.sampled_from([".", "_", "__", "-", "--", "----"])


@st.composite
def _component(draw: st.DrawFn) -> str:
    runs = draw(st.lists(_alnum, min_size=1, max_size=4))
    return runs[0] + "".join(draw(_separator) + run for run in runs[1:])


names_from_grammar = st.lists(_component(), min_size=1, max_size=5).map("/".join)
valid_names = names_from_grammar.filter(lambda n: len(n) <= MAX_NAME_LENGTH)
names_from_regex = st.from_regex(NAME_GRAMMAR, fullmatch=True)
valid_tags = st.from_regex(TAG_GRAMMAR, fullmatch=True)


@st.composite
def valid_digests(draw: st.DrawFn) -> str:
    algorithm = draw(st.sampled_from(sorted(ENCODED_LENGTH)))
    hexdigits = st.text("0123456789abcdef", min_size=64, max_size=64)
    if algorithm == "sha512":
        hexdigits = st.text("0123456789abcdef", min_size=128, max_size=128)
    return f"{algorithm}:{draw(hexdigits)}"


def near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid value with one hostile edit: inserted, replaced or appended text."""

    @st.composite
    def edit(draw: st.DrawFn) -> str:
        value = draw(valid)
        at = draw(st.integers(0, len(value)))
        cut = draw(st.integers(0, min(3, len(value) - at)))
        return value[:at] + draw(hostile_text) + value[at + cut :]

    return edit()


def any_of(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Hostile text, near misses and valid values."""
    return st.one_of(hostile_text, near(valid), valid)


def encode_exact(text: str, *, keep: str = "") -> str:
    """Percent-encode all but unreserved characters (and `keep`): the server decodes it back to
    exactly `text`."""
    return quote(text, safe=keep)


def encode_raw(text: str) -> str:
    """Percent-encode only what cannot go on a request line (controls, spaces, non-ASCII, `?`,
    `#`); `..`, `\\`, `/` and `%` escapes (even malformed ones) reach the server as written."""
    return quote(text, safe="/\\%:@;=+&$,!*'()[]{}|^`\"<>")


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    return st.recursive(
        JSON_SCALARS,
        lambda children: (
            st.lists(children, max_size=8)
            | st.dictionaries(st.text(max_size=12), children, max_size=8)
        ),
        max_leaves=max_leaves,
    )


def dumps(value: Any) -> bytes:
    """JSON text as Python writes it (NaN and Infinity included: not JSON, must be refused)."""
    return json.dumps(value, separators=(",", ":")).encode()


# Settings of the tests that talk to a real server: fewer examples, no deadline (a request can
# take a while on a loaded machine), and function-scoped fixtures are fine (the server is shared).
HTTP = settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
