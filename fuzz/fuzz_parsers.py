"""Fuzz target (atheris, coverage-guided libFuzzer) for every parser that sees raw client input:
digests, repository names, tags and references, upload Content-Range, the `n` page size, and
manifests (any bytes, any Content-Type). Each input must either parse into something that
satisfies the spec's grammar or raise the registry's typed error; anything else is a crash.

    python fuzz/fuzz_parsers.py [libFuzzer options, e.g. -runs=100000 -max_total_time=60 CORPUS]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys

import atheris
from corpus import seed_corpus  # fuzz/corpus.py, beside this script

with atheris.instrument_imports(include=["cargobay"]):
    from cargobay.errors import RegistryError
    from cargobay.registry.digest import Digest
    from cargobay.registry.manifests import parse_manifest
    from cargobay.registry.names import check_name, check_tag, is_tag
    from cargobay.registry.uploads import ChunkRange

NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
CONTENT_TYPES = [
    None,
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
    "text/plain",
]


def check_text(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except RegistryError:
        pass
    else:
        assert str(digest) == text and digest.algorithm in {"sha256", "sha512"}, text
        assert re.fullmatch(r"[a-f0-9]+", digest.encoded), text
    with contextlib.suppress(RegistryError):
        assert NAME.fullmatch(check_name(text)) and len(text) <= 255, text
    if is_tag(text):
        assert TAG.fullmatch(text), text
        assert check_tag(text) == text
    try:
        chunk = ChunkRange.parse(text)
    except RegistryError:
        pass
    else:
        assert 0 <= chunk.start <= chunk.end and chunk.length == chunk.end - chunk.start + 1


def check_manifest(content: bytes, content_type: str | None) -> None:
    digest = Digest("sha256", hashlib.sha256(content).hexdigest())
    try:
        parsed = parse_manifest(content, content_type, digest)
    except RegistryError:
        return
    assert isinstance(parsed.body, dict)
    record = parsed.record
    for reference in (*record.blob_references, *record.manifest_references):
        Digest.parse(reference)  # every reference the registry will follow is a valid digest
    if record.subject is not None:
        Digest.parse(record.subject)


def seeds() -> list[bytes]:
    """Starting points for a corpus: one valid input of each kind."""
    config = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": 2,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": CONTENT_TYPES[1],
        "config": config,
        "layers": [config],
        "subject": {**config, "mediaType": CONTENT_TYPES[1]},
        "annotations": {"a": "b"},
    }
    index = {"schemaVersion": 2, "mediaType": CONTENT_TYPES[2],
             "manifests": [{**config, "mediaType": CONTENT_TYPES[1]}]}  # fmt: skip
    return [
        b"\x00\x00" + str(config["digest"]).encode(),
        b"\x00\x00library/ubuntu",
        b"\x00\x00v1.2.3-rc_1",
        b"\x00\x000-1023",
        b"\x02\x01" + json.dumps(manifest).encode(),
        b"\x02\x02" + json.dumps(index).encode(),
    ]


def test_one_input(data: bytes) -> None:
    """Byte 0 picks what to parse, byte 1 a Content-Type for manifests; the rest is input."""
    if len(data) < 2:
        return
    kind, content_type, rest = data[0] % 3, CONTENT_TYPES[data[1] % len(CONTENT_TYPES)], data[2:]
    if kind == 0:
        check_text(rest.decode("utf-8", "replace"))
    elif kind == 1:
        check_text(rest.decode("latin-1"))
    else:
        check_manifest(rest, content_type)


def main() -> None:
    seed_corpus(sys.argv, seeds())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
