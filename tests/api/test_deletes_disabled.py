"""Content management when deletion is disabled: 'Registries MAY implement deletion or they MAY
disable it' - and then 'the registry MUST respond with either a 400 Bad Request or a 405 Method
Not Allowed' (cargobay: 405 with code UNSUPPORTED)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.helpers import (
    assert_error,
    digest_of,
    location_url,
    push_blob,
    push_image,
    repo_name,
    start_upload,
)
from tests.server import RegistryProcess


@pytest.fixture
def no_delete(start_registry: Callable[..., RegistryProcess]) -> Iterator[httpx.Client]:
    server = start_registry(config={"registry": {"delete_enabled": False}})
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_delete_manifest_by_digest_is_405(no_delete: httpx.Client) -> None:
    """Deleting Manifests: 'If manifest deletion is disabled, the registry MUST respond with
    either a 400 Bad Request or a 405 Method Not Allowed.'"""
    name = repo_name()
    body, digest = push_image(no_delete, name, "v1")
    assert_error(no_delete.delete(f"/v2/{name}/manifests/{digest}"), 405, "UNSUPPORTED")
    r = no_delete.get(f"/v2/{name}/manifests/{digest}")
    assert r.status_code == 200
    assert r.content == body


def test_delete_tag_is_405(no_delete: httpx.Client) -> None:
    """Deleting tags: 'If tag deletion is disabled, the registry MUST respond with either a 400
    Bad Request or a 405 Method Not Allowed.'"""
    name = repo_name()
    push_image(no_delete, name, "v1")
    assert_error(no_delete.delete(f"/v2/{name}/manifests/v1"), 405, "UNSUPPORTED")
    assert no_delete.get(f"/v2/{name}/manifests/v1").status_code == 200
    assert no_delete.get(f"/v2/{name}/tags/list").json()["tags"] == ["v1"]


def test_delete_blob_is_405(no_delete: httpx.Client) -> None:
    """Deleting Blobs: 'If blob deletion is disabled, the registry MUST respond with either a 400
    Bad Request or a 405 Method Not Allowed.'"""
    name = repo_name()
    data, digest = push_blob(no_delete, name)
    assert_error(no_delete.delete(f"/v2/{name}/blobs/{digest}"), 405, "UNSUPPORTED")
    assert no_delete.get(f"/v2/{name}/blobs/{digest}").content == data


def test_delete_of_unknown_content_is_still_refused(no_delete: httpx.Client) -> None:
    name = repo_name()
    push_image(no_delete, name, "v1")
    r = no_delete.delete(f"/v2/{name}/blobs/{digest_of(b'unknown')}")
    assert r.status_code in (404, 405)
    r = no_delete.delete(f"/v2/{name}/manifests/{digest_of(b'unknown')}")
    assert r.status_code in (404, 405)


def test_upload_cancel_still_works(no_delete: httpx.Client) -> None:
    """Cancelling an upload session (end-14) is not content deletion: still 204."""
    name = repo_name()
    location = location_url(start_upload(no_delete, name))
    assert no_delete.delete(location).status_code == 204
    assert no_delete.get(location).status_code == 404


def test_push_and_pull_unaffected(no_delete: httpx.Client) -> None:
    name = repo_name()
    body, digest = push_image(no_delete, name, "v1")
    assert no_delete.get(f"/v2/{name}/manifests/{digest}").content == body


def test_deletes_enabled_by_default(client: httpx.Client) -> None:
    name = repo_name()
    _, digest = push_blob(client, name)
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
