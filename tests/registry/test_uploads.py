from __future__ import annotations

import pytest

from cargobay.errors import RangeInvalid
from cargobay.registry.uploads import ChunkRange, range_header


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0-99", (0, 99)), ("bytes=5-5", (5, 5)), ("bytes 10-19/100", (10, 19)), (" 3-4 ", (3, 4))],
)
def test_chunk_range_parse(header: str, expected: tuple[int, int]) -> None:
    chunk = ChunkRange.parse(header)
    assert (chunk.start, chunk.end) == expected
    assert chunk.length == expected[1] - expected[0] + 1


@pytest.mark.parametrize("header", ["", "5", "5-", "-5", "a-b", "9-3", "1-2-3"])
def test_chunk_range_rejects(header: str) -> None:
    with pytest.raises(RangeInvalid):
        ChunkRange.parse(header)


def test_range_header() -> None:
    assert range_header(0) == "0-0"
    assert range_header(1) == "0-0"
    assert range_header(100) == "0-99"
