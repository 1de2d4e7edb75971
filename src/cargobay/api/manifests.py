"""Manifest endpoints: GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from cargobay.api.common import read_limited, registry, repository
from cargobay.notifications import publish


def _accepted_types(request: web.Request) -> list[str]:
    types = []
    for header in request.headers.getall("Accept", []):
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip()
            if media_type:
                types.append(media_type)
    if any(t in ("*/*", "application/*") for t in types):
        return []  # anything goes
    return types


async def get_manifest(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    reference = request.match_info["reference"]
    manifest = await registry(request).get_manifest(name, reference, _accepted_types(request))
    headers = {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(manifest.size)
        return web.Response(headers=headers)
    registry(request).pulls.note(name, manifest.digest)
    await publish.manifest_pulled(request, name, manifest, reference)
    return web.Response(body=manifest.content, headers=headers)


async def put_manifest(request: web.Request) -> web.StreamResponse:
    reg = registry(request)
    name = repository(request)
    content = await read_limited(request, reg.config.max_manifest_bytes)
    manifest, tags = await reg.put_manifest(
        name,
        request.match_info["reference"],
        content,
        request.headers.get("Content-Type"),
        request.query.getall("tag", []),
    )
    headers = CIMultiDict(
        {
            "Location": f"/v2/{name}/manifests/{manifest.digest}",
            "Docker-Content-Digest": manifest.digest,
            "Content-Length": "0",
        }
    )
    for tag in tags:
        headers.add("OCI-Tag", tag)
    if manifest.subject:
        headers["OCI-Subject"] = manifest.subject
    await publish.manifest_pushed(request, name, manifest, tags)
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    reference = request.match_info["reference"]
    await registry(request).delete_manifest(name, reference)
    await publish.manifest_deleted(request, name, reference)
    return web.Response(status=202, headers={"Content-Length": "0"})
