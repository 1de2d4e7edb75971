from __future__ import annotations

import pytest

from cargobay.errors import NameInvalid, TagInvalid
from cargobay.registry.names import check_name, check_tag, is_tag


@pytest.mark.parametrize(
    "name", ["a", "library/ubuntu", "a/b/c/d", "a.b", "a_b", "a__b", "a---b", "0x/y-9"]
)
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "a-", "-a", "a___b", "a..b", "a/.b", "a b", "a" * 256]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        check_name(name)


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_x", "A-b_c.d", "a" * 128])
def test_valid_tags(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a" * 129, "a:b", "a/b", "sha256:" + "a" * 64])
def test_invalid_tags(tag: str) -> None:
    assert not is_tag(tag)
    with pytest.raises(TagInvalid):
        check_tag(tag)


def test_trailing_newline_is_not_a_valid_name_or_tag() -> None:
    assert not is_tag("latest\n")
    with pytest.raises(NameInvalid):
        check_name("a/b\n")
