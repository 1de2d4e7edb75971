"""Repository names and tags, as the distribution spec defines them."""

from __future__ import annotations

import re

from cargobay.errors import NameInvalid, TagInvalid

_NAME = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

# Many clients limit "host[:port]/name" to 255 characters; 255 leaves room for nothing else, so
# this is only a guard against absurd names, not a promise that every client copes.
MAX_NAME_LENGTH = 255


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name!r}", detail={"name": name})
    return name


def is_tag(reference: str) -> bool:
    return _TAG.fullmatch(reference) is not None


def check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise TagInvalid(f"invalid tag {tag!r}", detail={"tag": tag})
    return tag
