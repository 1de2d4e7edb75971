"""Logging: one format for every process (text, JSON or logfmt) and the access log.

Every record may carry structured fields (`extra={"fields": {...}}`); the access logger writes
one record per request with method, route, repository, status, bytes, duration, client address,
user and request id. Nothing here ever sees request headers, query strings or response headers,
so credentials, tokens and presigned URL signatures cannot reach the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from cargobay import metrics
from cargobay.api.common import identity

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
# A client's own request id is kept when it looks like one (a proxy's, say), else replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_LOGFMT_BARE = re.compile(r"[^\s=\"]+")


class _Formatter(logging.Formatter):
    def __init__(self, style: str) -> None:
        super().__init__()
        self.style_name = style

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        if self.style_name == "json":
            return json.dumps(fields, default=str)
        if self.style_name == "logfmt":
            return " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())
        extra = " ".join(f"{k}={_logfmt(v)}" for k, v in getattr(record, "fields", {}).items())
        text = f"{fields['time']} {record.levelname} {record.name} [{record.process}] "
        text += f"{fields['message']} {extra}".rstrip()
        return text + (f"\n{fields['exception']}" if record.exc_info else "")


def _logfmt(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if _LOGFMT_BARE.fullmatch(text) else json.dumps(text)


def configure_logging(level: str, style: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(style))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(_one_line_for_malformed_requests)


def _one_line_for_malformed_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs every request its HTTP parser refuses (with a 400) as an error with a
    traceback: on a public port that is noise anyone can produce at will. One info line."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError):
        record.msg = "refused a malformed request from %s: %s"
        client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.args = (client, " ".join(str(exc.message).split()))
        record.exc_info = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)
    return True


def request_id(request: web.BaseRequest) -> str:
    """This request's id: the client's X-Request-Id if sane, else a new one."""
    value = request.get(REQUEST_ID_KEY)
    if value is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        value = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request[REQUEST_ID_KEY] = value
    return value


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response names its request."""
    response.headers[REQUEST_ID_HEADER] = request_id(request)


def _match_info(request: web.BaseRequest) -> web.UrlMappingMatchInfo | None:
    """The route a request matched; None for one refused before routing (aiohttp asserts)."""
    try:
        match = request.match_info if isinstance(request, web.Request) else None
    except AssertionError:
        return None
    return match if isinstance(match, web.UrlMappingMatchInfo) else None


class AccessLogger(AbstractAccessLogger):
    """Called by aiohttp once a response has been sent completely (streamed bodies too): the
    access log line and the request metrics."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        match = _match_info(request)
        if match is not None:
            resource = match.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            repository = match.get("name")
            user = identity(request).user  # type: ignore[arg-type]
        else:  # refused by the HTTP parser before routing (aiohttp's own 400)
            route, repository, user = "malformed", None, ""
        bytes_in = request.content_length or 0
        # Content-Length when known (every response but a chunked stream), else what was
        # written, headers included.
        bytes_out = response.content_length or response.body_length
        if request.method == "HEAD":
            bytes_out = 0
        recorder = metrics.current()
        if recorder is not None:
            recorder.observe_request(
                route, request.method, response.status, time, bytes_in, bytes_out
            )
        if not self.logger.isEnabledFor(logging.INFO):
            return
        fields = {
            "method": request.method,
            "route": route,
            "repository": repository,
            "status": response.status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(time * 1000, 3),
            "client": request.remote,
            "user": user,
            "request_id": request_id(request),
        }
        message = f"{request.method} {route} {response.status}"
        self.logger.info(message, extra={"fields": fields})

    @property
    def enabled(self) -> bool:
        return metrics.current() is not None or self.logger.isEnabledFor(logging.INFO)
