"""Sending hostile requests exactly as written, and what every response must look like."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from tests.api.helpers import SPEC_ERROR_CODES

# The statuses each spec error code may come with (errors.py; UNSUPPORTED also covers what
# aiohttp refuses itself: no route, wrong method, oversized parts).
STATUSES = {
    "BLOB_UNKNOWN": {404},
    "BLOB_UPLOAD_INVALID": {400, 408, 416},
    "BLOB_UPLOAD_UNKNOWN": {404},
    "DIGEST_INVALID": {400},
    "MANIFEST_BLOB_UNKNOWN": {400},
    "MANIFEST_INVALID": {400, 413},
    "MANIFEST_UNKNOWN": {404},
    "NAME_INVALID": {400},
    "NAME_UNKNOWN": {404},
    "SIZE_INVALID": {400},
    "UNAUTHORIZED": {401},
    "DENIED": {403},
    "UNSUPPORTED": {400, 404, 405, 413, 414, 416, 431},
    "TOOMANYREQUESTS": {429},
}


@dataclass
class Reply:
    method: str
    target: str
    status: int
    headers: Message
    body: bytes

    def __str__(self) -> str:
        return f"{self.method} {self.target[:300]} -> {self.status} {self.body[:300]!r}"


class RawClient:
    """HTTP/1.1 with the request target sent byte for byte: httpx (like browsers) removes
    `.` and `..` segments before sending, which would hide exactly what is under test."""

    def __init__(self, host: str) -> None:
        self.host, port = host.rsplit(":", 1)
        self.port = int(port)

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, target, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(method, target, response.status, response.headers, response.read())
        finally:
            connection.close()


def spec_codes(reply: Reply) -> list[str]:
    """Check the invariants of every response and return its error codes (none for 1xx-3xx):
    never a 5xx; a 4xx carries the spec's JSON error envelope with spec codes, each with a
    status that goes with it (HEAD responses have no body to check)."""
    assert reply.status < 500, str(reply)
    if reply.status < 400 or reply.method == "HEAD":
        return []
    content_type = reply.headers.get("Content-Type", "")
    assert content_type.startswith("application/json"), (content_type, str(reply))
    document = json.loads(reply.body)
    assert isinstance(document, dict) and isinstance(document.get("errors"), list), str(reply)
    assert document["errors"], str(reply)
    codes = []
    for error in document["errors"]:
        assert isinstance(error, dict) and isinstance(error.get("message", ""), str), str(reply)
        code = error.get("code")
        assert code in SPEC_ERROR_CODES, str(reply)
        assert reply.status in STATUSES[code], str(reply)
        codes.append(code)
    return codes
