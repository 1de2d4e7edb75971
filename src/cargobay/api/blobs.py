"""Blob endpoints: GET/HEAD/DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

from aiohttp import web

from cargobay.api.common import registry, repository
from cargobay.errors import BlobUnknown

OCTET_STREAM = "application/octet-stream"


async def get_blob(request: web.Request) -> web.StreamResponse:
    blob = await registry(request).locate_blob(repository(request), request.match_info["digest"])
    headers = {
        "Docker-Content-Digest": str(blob.digest),
        "Content-Type": OCTET_STREAM,
        "ETag": f'"{blob.digest}"',
        "Cache-Control": "max-age=31536000",
        "Accept-Ranges": "bytes",
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(blob.size)
        return web.Response(headers=headers)
    if blob.url is not None:
        raise web.HTTPTemporaryRedirect(blob.url, headers=headers)
    if blob.path is None:
        raise BlobUnknown("blob has no readable location", detail={"digest": str(blob.digest)})
    # FileResponse answers Range requests (206, 416) and sends the file with sendfile.
    return web.FileResponse(blob.path, headers=headers)


async def delete_blob(request: web.Request) -> web.StreamResponse:
    await registry(request).delete_blob(repository(request), request.match_info["digest"])
    return web.Response(status=202, headers={"Content-Length": "0"})
