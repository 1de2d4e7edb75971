"""Blob endpoints: GET/HEAD/DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import re

from aiohttp import web

from cargobay.api.common import registry, repository
from cargobay.errors import RangeNotSatisfiable
from cargobay.notifications import publish
from cargobay.registry.registry import BlobLocation

OCTET_STREAM = "application/octet-stream"
SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)


async def get_blob(request: web.Request) -> web.StreamResponse:
    head = request.method == "HEAD"
    name = repository(request)
    blob = await registry(request).locate_blob(
        name, request.match_info["digest"], for_download=not head
    )
    headers = {
        "Docker-Content-Digest": str(blob.digest),
        "Content-Type": OCTET_STREAM,
        "ETag": f'"{blob.digest}"',
        "Cache-Control": "max-age=31536000",
        "Accept-Ranges": "bytes",
    }
    if head:
        headers["Content-Length"] = str(blob.size)
        return web.Response(headers=headers)
    await publish.blob_pulled(request, name, str(blob.digest), blob.size)
    if blob.url is not None:
        raise web.HTTPTemporaryRedirect(blob.url, headers=headers)
    if blob.path is not None:
        # FileResponse answers Range requests (206, 416) and sends the file with sendfile.
        return web.FileResponse(blob.path, headers=headers)
    return await _stream(request, blob, headers)


async def _stream(
    request: web.Request, blob: BlobLocation, headers: dict[str, str]
) -> web.StreamResponse:
    """Stream from a store with no local file (S3 with redirects off), honouring one Range."""
    size = blob.size
    start, end = 0, size
    status = 200
    wanted = _range(request.headers.get("Range"), size)
    if wanted is not None:
        start, end = wanted
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    async for chunk in registry(request).read_blob(blob.digest, start, end - start):
        await response.write(chunk)
    await response.write_eof()
    return response


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, as [start, end); None for the whole blob (no header, or a
    form we do not serve partially, such as several ranges)."""
    match = SINGLE_RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def delete_blob(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    digest = request.match_info["digest"]
    await registry(request).delete_blob(name, digest)
    await publish.blob_deleted(request, name, digest)
    return web.Response(status=202, headers={"Content-Length": "0"})
