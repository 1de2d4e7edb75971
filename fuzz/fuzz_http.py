"""Fuzz target (atheris) for the whole HTTP API: the fuzzer writes the method, the request
target (from every endpoint's template with fuzzed segments and query), Content-Type,
Content-Range and the body; a real registry (files + SQLite in a temporary folder) answers over
loopback. Every answer must be below 500, every JSON error must be the spec's envelope with a
known code, and nothing may appear outside the data folder.

    python fuzz/fuzz_http.py [libFuzzer options, e.g. -runs=5000 -max_total_time=60 CORPUS]
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import atheris
from corpus import seed_corpus  # fuzz/corpus.py, beside this script

with atheris.instrument_imports(include=["cargobay"]):
    from aiohttp import web

    from cargobay.app import build_registry, create_app
    from cargobay.config import load_config
    from cargobay.logs import configure_logging

SPEC_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
}  # fmt: skip
METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
CONTENT_TYPES = [
    "",
    "application/octet-stream",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/json",
]
BLOB = b"fuzzed registry blob"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class Registry:
    """A registry in a thread of its own, with a repository, a blob, a tagged manifest and an
    upload session for the fuzzer to find."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cargobay-fuzz-"))
        self.data = self.root / "data"
        config = load_config(environ={}, overrides={"data_dir": str(self.data)})
        registry = build_registry(config)
        registry.metadata.migrate()
        self.app = create_app(config, registry)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait()
        self.upload = self._seed()
        self.outside = sorted(os.listdir(self.root))

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        started.set()
        self.loop.run_forever()

    def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", "fuzz")
            for key, value in headers.items():
                connection.putheader(key, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.read(), response.headers
        finally:
            connection.close()

    def _seed(self) -> str:
        post = self.request("POST", f"/v2/fuzz/repo/blobs/uploads/?digest={BLOB_DIGEST}", {}, BLOB)
        assert post[0] == 201, post
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": CONTENT_TYPES[2],
                "config": {
                    "mediaType": "application/octet-stream",
                    "digest": BLOB_DIGEST,
                    "size": len(BLOB),
                },
                "layers": [],
            }
        ).encode()
        put = self.request(
            "PUT", "/v2/fuzz/repo/manifests/latest", {"Content-Type": CONTENT_TYPES[2]}, manifest
        )
        assert put[0] == 201, put
        status, _, headers = self.request("POST", "/v2/fuzz/repo/blobs/uploads/", {}, b"")
        assert status == 202
        return str(headers["Location"]).rsplit("/", 1)[1]


REGISTRY: Registry | None = None


TEMPLATES = [
    "/v2/",
    "/v2/{name}/blobs/{reference}",
    "/v2/{name}/blobs/uploads/",
    "/v2/{name}/blobs/uploads/{reference}",
    "/v2/{name}/manifests/{reference}",
    "/v2/{name}/tags/list",
    "/v2/{name}/referrers/{reference}",
    "/v2/_catalog",
]
QUERY_KEYS = ["n", "last", "digest", "mount", "from", "artifactType", "tag"]


def test_one_input(data: bytes) -> None:
    """Bytes 0-6 choose the method, endpoint, name, reference, Content-Type, query and
    Content-Range (so that a corpus reaches every endpoint at once); the rest is text for
    them and the body."""
    assert REGISTRY is not None
    if len(data) < 7:
        return
    head, provider = data[:7], atheris.FuzzedDataProvider(data[7:])

    def segment(choice: int) -> str:
        if choice % 5 == 0:
            raw = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 40))
            return quote(raw, safe="/:@") if choice % 2 else raw
        return ["", "fuzz/repo", BLOB_DIGEST, REGISTRY.upload, "latest"][choice % 5]

    method = METHODS[head[0] % len(METHODS)]
    path = TEMPLATES[head[1] % len(TEMPLATES)].format(
        name=segment(head[2]), reference=segment(head[3])
    )
    headers = {}
    if content_type := CONTENT_TYPES[head[4] % len(CONTENT_TYPES)]:
        headers["Content-Type"] = content_type
    if head[5] % 2:
        path += "?" + "&".join(
            f"{QUERY_KEYS[provider.ConsumeIntInRange(0, len(QUERY_KEYS) - 1)]}="
            + quote(provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 30)))
            for _ in range(1 + head[5] % 3)
        )
    if head[6] % 2:
        text = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 24)).decode("latin-1")
        headers["Content-Range"] = text.replace("\r", "").replace("\n", "")
    request_target = "".join(c if 0x20 < ord(c) < 0x7F else quote(c) for c in path)
    body = provider.ConsumeBytes(provider.remaining_bytes())
    status, answer, answer_headers = REGISTRY.request(method, request_target, headers, body)
    where = f"{method} {request_target} {headers} -> {status} {answer[:300]!r}"
    assert status < 500, where
    answer_type = answer_headers.get("Content-Type", "")
    if status >= 400 and method != "HEAD" and answer_type.startswith("application/json"):
        errors = json.loads(answer)["errors"]
        assert errors and all(error["code"] in SPEC_CODES for error in errors), where
    assert sorted(os.listdir(REGISTRY.root)) == REGISTRY.outside, where


def seeds() -> list[bytes]:
    """One starting input per method and endpoint, with every kind of segment."""
    return [
        bytes([method, template, name, reference, 2, flags, flags]) + b"\x10ab/../c\x00%2e"
        for method in range(len(METHODS))
        for template in range(len(TEMPLATES))
        for name, reference in ((1, 2), (0, 4), (1, 3), (5, 0))
        for flags in (0, 1)
    ]


def main() -> None:
    global REGISTRY
    seed_corpus(sys.argv, seeds())
    atheris.Setup(sys.argv, test_one_input)
    configure_logging("warning", "text")  # aiohttp's refusals of broken HTTP are info lines
    REGISTRY = Registry()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
