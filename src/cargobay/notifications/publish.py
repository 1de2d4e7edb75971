"""What the API handlers call after an operation succeeded. Each returns at once when no
endpoint is configured; otherwise it returns once the event is in the durable queue."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from cargobay.metadata.base import ManifestRecord
from cargobay.notifications.events import BLOB_MEDIA_TYPE, Target
from cargobay.notifications.notifier import NOTIFIER_KEY, Notifier
from cargobay.registry.names import is_tag


def _url(request: web.Request, repository: str, kind: str, digest: str) -> str:
    return f"{request.scheme}://{request.host}/v2/{repository}/{kind}/{digest}"


async def manifest_pulled(
    request: web.Request, repository: str, manifest: ManifestRecord, reference: str
) -> None:
    notifier = request.app.get(NOTIFIER_KEY)
    if notifier is None:
        return
    target = Target(
        repository,
        manifest.digest,
        manifest.media_type,
        manifest.size,
        _url(request, repository, "manifests", manifest.digest),
        tag=reference if is_tag(reference) else None,
    )
    await notifier.publish(request, "pull", [target])


async def manifest_pushed(
    request: web.Request, repository: str, manifest: ManifestRecord, tags: Sequence[str]
) -> None:
    """One event per tag; one without a tag for a push by digest alone."""
    notifier = request.app.get(NOTIFIER_KEY)
    if notifier is None:
        return
    url = _url(request, repository, "manifests", manifest.digest)
    tagged: Sequence[str | None] = tags or [None]
    targets = [
        Target(repository, manifest.digest, manifest.media_type, manifest.size, url, tag=tag)
        for tag in tagged
    ]
    await notifier.publish(request, "push", targets)


async def manifest_deleted(request: web.Request, repository: str, reference: str) -> None:
    """A tag's delete names the tag, a manifest's the digest (as distribution's events)."""
    notifier = request.app.get(NOTIFIER_KEY)
    if notifier is None:
        return
    await notifier.publish(request, "delete", [_deleted(repository, reference)])


async def deleted_by_retention(
    notifier: Notifier | None, port: int, repository: str, reference: str
) -> None:
    """A tag or manifest a retention policy deleted: the event of a DELETE by the API, without
    a request or an actor."""
    if notifier is not None:
        await notifier.publish_unrequested("delete", [_deleted(repository, reference)], port)


def _deleted(repository: str, reference: str) -> Target:
    """A tag's delete names the tag, a manifest's the digest (as distribution's events)."""
    return Target(repository, tag=reference) if is_tag(reference) else Target(repository, reference)


async def blob_pulled(request: web.Request, repository: str, digest: str, size: int) -> None:
    notifier = request.app.get(NOTIFIER_KEY)
    if notifier is None:
        return
    url = _url(request, repository, "blobs", digest)
    await notifier.publish(
        request, "pull", [Target(repository, digest, BLOB_MEDIA_TYPE, size, url)]
    )


async def blob_pushed(
    request: web.Request,
    repository: str,
    digest: str,
    size: int,
    from_repository: str | None = None,
) -> None:
    """An upload completed, or a blob was mounted (from `from_repository`, when named)."""
    notifier = request.app.get(NOTIFIER_KEY)
    if notifier is None:
        return
    url = _url(request, repository, "blobs", digest)
    target = Target(repository, digest, BLOB_MEDIA_TYPE, size, url, from_repository=from_repository)
    await notifier.publish(request, "push", [target])


async def blob_deleted(request: web.Request, repository: str, digest: str) -> None:
    notifier = request.app.get(NOTIFIER_KEY)
    if notifier is None:
        return
    await notifier.publish(request, "delete", [Target(repository, digest)])
