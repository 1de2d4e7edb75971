"""The atheris fuzz targets in fuzz/, run for a fixed number of inputs from a fixed seed (a
longer search: `make fuzz`). A crash, a 5xx or a broken error envelope fails the test with the
fuzzer's report, which names the input that did it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent.parent / "fuzz"


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "runs"), [("fuzz_parsers", 200_000), ("fuzz_http", 4_000)])
def test_fuzz_target(tmp_path: Path, name: str, runs: int) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / f"{name}.py"),
            f"-runs={runs}",
            "-seed=1",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    report = result.stderr[-6000:]
    assert result.returncode == 0, report
    assert f"Done {runs} runs" in result.stderr, report
