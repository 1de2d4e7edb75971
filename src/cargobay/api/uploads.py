"""Blob upload endpoints: POST /v2/<name>/blobs/uploads/ and /v2/<name>/blobs/uploads/<id>."""

from __future__ import annotations

from aiohttp import web

from cargobay.api.common import body_chunks, guard, identity, registry, repository
from cargobay.metadata.base import UploadRecord
from cargobay.notifications import publish
from cargobay.registry.names import check_name
from cargobay.registry.uploads import ChunkRange, range_header, upload_location


def _session_headers(upload: UploadRecord) -> dict[str, str]:
    return {
        "Location": upload_location(upload),
        "Range": range_header(upload.size),
        "Docker-Upload-UUID": upload.id,
        "Content-Length": "0",
    }


def _blob_created(name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


def _chunk_range(request: web.Request) -> ChunkRange | None:
    value = request.headers.get("Content-Range")
    return ChunkRange.parse(value) if value else None


async def start_upload(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    reg = registry(request)
    query = request.query
    await reg.check_room(name)

    mount = query.get("mount")
    if mount:
        source = check_name(query["from"]) if query.get("from") else None
        auth = guard(request)
        who = identity(request)
        if (
            auth is not None
            and source is not None
            and not auth.may(who, "repository", source, "pull")
        ):
            source = None  # may not read it: no mount, upload the bytes instead
        # With authentication on, only a named source the caller may read is searched.
        size = await reg.mount_blob(name, mount, source, anywhere=auth is None)
        if size is not None:
            await publish.blob_pushed(request, name, mount, size, from_repository=source)
            return _blob_created(name, mount)

    upload = await reg.uploads.start(name, query.get("digest-algorithm"))
    digest = query.get("digest")
    if digest is None:
        return web.Response(status=202, headers=_session_headers(upload))
    # Single-request monolithic push: the body is the whole blob.
    try:
        verified, size = await reg.uploads.complete(
            upload, digest, body_chunks(request), _chunk_range(request), request.content_length
        )
    except BaseException:
        await reg.uploads.cancel(upload)
        raise
    await publish.blob_pushed(request, name, str(verified), size)
    return _blob_created(name, str(verified))


async def patch_upload(request: web.Request) -> web.StreamResponse:
    reg = registry(request)
    async with reg.uploads.session(repository(request), request.match_info["upload_id"]) as upload:
        upload = await reg.uploads.append(
            upload, body_chunks(request), _chunk_range(request), request.content_length
        )
    return web.Response(status=202, headers=_session_headers(upload))


async def finish_upload(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    reg = registry(request)
    async with reg.uploads.session(name, request.match_info["upload_id"]) as upload:
        digest, size = await reg.uploads.complete(
            upload,
            request.query.get("digest"),
            body_chunks(request) if request.body_exists else None,
            _chunk_range(request),
            request.content_length,
        )
    await publish.blob_pushed(request, name, str(digest), size)
    return _blob_created(name, str(digest))


async def upload_status(request: web.Request) -> web.StreamResponse:
    upload = await registry(request).uploads.status(
        repository(request), request.match_info["upload_id"]
    )
    return web.Response(status=204, headers=_session_headers(upload))


async def cancel_upload(request: web.Request) -> web.StreamResponse:
    reg = registry(request)
    upload = await reg.uploads.get(repository(request), request.match_info["upload_id"])
    await reg.uploads.cancel(upload)
    return web.Response(status=204)
