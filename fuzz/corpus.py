"""Shared by the fuzz targets (run as scripts, so this folder is on sys.path)."""

from __future__ import annotations

from pathlib import Path


def seed_corpus(argv: list[str], inputs: list[bytes]) -> None:
    """Start an empty corpus folder (the first one named) with `inputs`."""
    folders = [Path(arg) for arg in argv[1:] if not arg.startswith("-")]
    if folders and folders[0].is_dir() and not any(folders[0].iterdir()):
        for i, data in enumerate(inputs):
            (folders[0] / f"seed-{i}").write_bytes(data)
