"""Discovery endpoints: /v2/, tags, referrers, catalog."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from cargobay.api.common import guard, identity, next_link, page_size, registry, repository
from cargobay.registry.manifests import OCI_INDEX

TAGS_MAX_PAGE = 10_000
CATALOG_DEFAULT_PAGE = 100
CATALOG_MAX_PAGE = 10_000
REFERRERS_DEFAULT_PAGE = 1_000


def _json(
    body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), headers={**(headers or {}), "Content-Type": content_type}
    )


async def api_version(request: web.Request) -> web.StreamResponse:
    return _json({})


async def list_tags(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    limit = page_size(request, default=None, maximum=TAGS_MAX_PAGE)
    page = await registry(request).list_tags(name, limit, request.query.get("last"))
    headers = {}
    if page.more and page.items:
        headers["Link"] = next_link(
            f"/v2/{name}/tags/list", n=limit or len(page.items), last=page.items[-1]
        )
    return _json({"name": name, "tags": page.items}, headers)


async def catalog(request: web.Request) -> web.StreamResponse:
    limit = page_size(request, default=CATALOG_DEFAULT_PAGE, maximum=CATALOG_MAX_PAGE)
    page = await registry(request).list_repositories(limit, request.query.get("last"))
    headers = {}
    if page.more and page.items:
        headers["Link"] = next_link("/v2/_catalog", n=limit, last=page.items[-1])
    names = page.items
    auth = guard(request)
    if auth is not None:  # list only what the caller may pull (a page may come out shorter)
        who = identity(request)
        names = [name for name in names if auth.may(who, "repository", name, "pull")]
    return _json({"repositories": names}, headers)


async def list_referrers(request: web.Request) -> web.StreamResponse:
    name = repository(request)
    digest = request.match_info["digest"]
    artifact_type = request.query.get("artifactType") or None
    limit = page_size(request, default=REFERRERS_DEFAULT_PAGE, maximum=REFERRERS_DEFAULT_PAGE)
    page = await registry(request).list_referrers(
        name, digest, artifact_type, limit or REFERRERS_DEFAULT_PAGE, request.query.get("last")
    )
    manifests = []
    for referrer in page.referrers:
        descriptor: dict[str, Any] = {
            "mediaType": referrer.media_type,
            "digest": referrer.digest,
            "size": referrer.size,
        }
        if referrer.artifact_type:
            descriptor["artifactType"] = referrer.artifact_type
        if referrer.annotations:
            descriptor["annotations"] = referrer.annotations
        manifests.append(descriptor)
    headers = {}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    if page.more:
        headers["Link"] = next_link(
            f"/v2/{name}/referrers/{digest}",
            n=limit,
            last=page.referrers[-1].digest,
            artifactType=artifact_type,
        )
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return _json(body, headers, content_type=OCI_INDEX)
