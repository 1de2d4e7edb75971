"""Immutable tags (`immutable_tags`): the rule matcher, then the HTTP API on both setups, then
skopeo seeing the refusal."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cargobay.config import ImmutableTagRuleConfig
from cargobay.lifecycle.immutable import ImmutableTags
from tests.api.helpers import (
    OCI_MANIFEST,
    assert_error,
    canonical,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)
from tests.clients.helpers import OciLayout, run, run_status
from tests.conftest import BACKENDS, TLS_CONTEXT, require_tool, scaleout_config
from tests.server import RegistryProcess

RULES: list[dict[str, Any]] = [
    {"repositories": ["release/*"], "tags": ["^v[0-9]"]},
    {"repositories": ["*"], "tags": ["^stable$"]},
]
RELEASE_RULE = 'immutable_tags[0]: repositories ["release/*"], tags ["^v[0-9]"]'


def immutable_tags(*rules: tuple[list[str], list[str]]) -> ImmutableTags:
    return ImmutableTags.from_config([ImmutableTagRuleConfig(r, t) for r, t in rules])


# -- the matcher ---------------------------------------------------------------------------


def test_repository_globs_match_across_slashes() -> None:
    tags = immutable_tags((["release/*"], ["^v[0-9]"]))
    assert tags.rule_for("release/app", "v1.0") is not None
    assert tags.rule_for("release/team/app", "v2") is not None
    assert tags.rule_for("releases/app", "v1") is None
    assert tags.rule_for("release", "v1") is None
    assert tags.rule_for("team/release/app", "v1") is None


def test_tag_patterns_are_searched_as_written() -> None:
    tags = immutable_tags((["*"], ["^v[0-9]", r"-rc\d+$"]))
    assert tags.rule_for("app", "v1") is not None
    assert tags.rule_for("app", "xv1") is None  # anchored by the user
    assert tags.rule_for("app", "1.0-rc2") is not None  # searched, not matched from the start
    assert tags.rule_for("app", "1.0-rc2-debug") is None
    assert tags.rule_for("app", "latest") is None


def test_the_first_covering_rule_is_named() -> None:
    tags = immutable_tags((["a/*"], ["^x"]), (["*"], ["^v", r"\d"]))
    rule = tags.rule_for("a/b", "v1")
    assert rule is not None and rule.index == 1
    assert rule.describe() == r'immutable_tags[1]: repositories ["*"], tags ["^v", "\d"]'
    assert rule.refusal("a/b", "v1") == (
        r'tag "v1" of "a/b" is immutable (immutable_tags[1]: repositories ["*"], tags ["^v", "\d"])'
    )
    first = tags.rule_for("a/b", "x1")
    assert first is not None and first.index == 0


def test_fixed_keeps_the_covered_tags_in_order() -> None:
    tags = immutable_tags((["release/*"], ["^v[0-9]"]), (["*"], ["^stable$"]))
    assert tags.fixed("release/app", ["latest", "v2", "stable", "v1", "stable-1"]) == [
        "v2",
        "stable",
        "v1",
    ]
    assert tags.fixed("other", ["v1", "stable"]) == ["stable"]
    assert ImmutableTags().fixed("release/app", ["v1"]) == []


# -- over HTTP, on both setups --------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, start_registry: Callable[..., RegistryProcess]
) -> RegistryProcess:
    config: dict[str, Any] = {"immutable_tags": RULES}
    if request.param != "embedded":
        prefix = f"immutable{uuid.uuid4().hex[:8]}"
        seaweedfs = request.getfixturevalue("seaweedfs")
        database = request.getfixturevalue("postgres").create_database(prefix)
        config.update(scaleout_config(seaweedfs, database, prefix))
    return start_registry(config=config)


@pytest.fixture
def client(registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=60, verify=TLS_CONTEXT) as c:
        yield c


def release_name() -> str:
    return f"release/{uuid.uuid4().hex[:12]}"


def image(client: httpx.Client, name: str) -> bytes:
    """A new image's manifest, its blobs pushed, the manifest not."""
    config, _ = push_blob(client, name, json.dumps({"n": uuid.uuid4().hex}).encode())
    layer, _ = push_blob(client, name)
    return canonical(image_manifest(config, [layer]))


def tagged_digest(client: httpx.Client, name: str, tag: str) -> str:
    r = client.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, (r.status_code, r.text)
    return str(r.headers["Docker-Content-Digest"])


def assert_immutable(response: httpx.Response, name: str, tag: str, rule: str) -> None:
    assert_error(response, 403, "DENIED")
    (error,) = response.json()["errors"]
    assert error["message"] == f'tag "{tag}" of "{name}" is immutable ({rule})'


def test_first_push_and_the_same_push_again_are_allowed(client: httpx.Client) -> None:
    name = release_name()
    body, digest = push_image(client, name, "v1.0")
    push_manifest(client, name, "v1.0", body)  # podman and skopeo push again
    push_manifest(client, name, digest, body, params={"tag": ["v1.0", "v1"]})
    assert tagged_digest(client, name, "v1.0") == tagged_digest(client, name, "v1") == digest


def test_moving_an_immutable_tag_is_refused(client: httpx.Client) -> None:
    name = release_name()
    _, digest = push_image(client, name, "v1.0")
    other = image(client, name)
    r = push_manifest(client, name, "v1.0", other, expect=None)
    assert_immutable(r, name, "v1.0", RELEASE_RULE)
    assert tagged_digest(client, name, "v1.0") == digest
    assert client.get(f"/v2/{name}/manifests/{digest_of(other)}").status_code == 404


def test_a_multi_tag_push_moving_one_immutable_tag_is_refused_wholly(
    client: httpx.Client,
) -> None:
    name = release_name()
    first, digest = push_image(client, name, "v1")
    push_manifest(client, name, "latest", first)
    other = image(client, name)
    tags = ["latest", "nightly", "v1", "v2"]
    r = push_manifest(client, name, digest_of(other), other, expect=None, params={"tag": tags})
    assert_immutable(r, name, "v1", RELEASE_RULE)
    assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["latest", "v1"]
    assert tagged_digest(client, name, "latest") == digest
    assert client.get(f"/v2/{name}/manifests/{digest_of(other)}").status_code == 404


def test_deleting_an_immutable_tag_is_refused(client: httpx.Client) -> None:
    name = release_name()
    body, digest = push_image(client, name, "v1")
    push_manifest(client, name, "latest", body)
    r = client.delete(f"/v2/{name}/manifests/v1")
    assert_immutable(r, name, "v1", RELEASE_RULE)
    assert tagged_digest(client, name, "v1") == digest
    assert client.delete(f"/v2/{name}/manifests/latest").status_code == 202


def test_deleting_a_manifest_an_immutable_tag_points_at_is_refused(
    client: httpx.Client,
) -> None:
    name = release_name()
    body, digest = push_image(client, name, "latest")
    push_manifest(client, name, "stable", body)  # the second rule covers every repository
    r = client.delete(f"/v2/{name}/manifests/{digest}")
    assert_immutable(r, name, "stable", 'immutable_tags[1]: repositories ["*"], tags ["^stable$"]')
    assert tagged_digest(client, name, "latest") == digest
    _, untagged = push_image(client, name, "nightly")
    assert client.delete(f"/v2/{name}/manifests/{untagged}").status_code == 202


def test_other_tags_and_repositories_are_unaffected(client: httpx.Client) -> None:
    release, other = release_name(), f"team/{uuid.uuid4().hex[:12]}"
    for name, tag in [(release, "latest"), (release, "dev-v1"), (other, "v1")]:
        push_image(client, name, tag)
        body, digest = push_image(client, name, tag)  # moves the tag
        assert tagged_digest(client, name, tag) == digest
        assert client.delete(f"/v2/{name}/manifests/{tag}").status_code == 202
        push_manifest(client, name, tag, body)
        assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 202


def test_concurrent_first_pushes_of_an_immutable_tag(registry: RegistryProcess) -> None:
    """Exactly one of 20 concurrent first pushes (on two workers) wins; the tag is its."""
    name = release_name()
    with httpx.Client(base_url=registry.url, timeout=60, verify=TLS_CONTEXT) as client:
        bodies = [image(client, name) for _ in range(20)]

    def put(body: bytes) -> httpx.Response:
        with httpx.Client(base_url=registry.url, timeout=60, verify=TLS_CONTEXT) as client:
            return push_manifest(client, name, "v1", body, expect=None)

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(put, bodies))
    winners = [b for b, r in zip(bodies, responses, strict=True) if r.status_code == 201]
    assert len(winners) == 1, [r.status_code for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_immutable(response, name, "v1", RELEASE_RULE)
    with httpx.Client(base_url=registry.url, timeout=60, verify=TLS_CONTEXT) as client:
        assert tagged_digest(client, name, "v1") == digest_of(winners[0])


# -- a real client -----------------------------------------------------------------------------


@pytest.mark.clients
def test_skopeo_shows_the_rule_when_it_would_move_an_immutable_tag(
    start_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    skopeo = require_tool("skopeo")
    server = start_registry(config={"immutable_tags": RULES})
    layout = OciLayout(tmp_path / "layout")
    layout.tag(layout.add_image({"one.txt": b"first image\n"}), "one")
    layout.tag(layout.add_image({"two.txt": b"second image\n"}), "two")
    destination = f"docker://{server.host}/release/app:v1.0"

    def copy(ref: str) -> list[str | Path]:
        return [skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout.root}:{ref}", destination]

    run(copy("one"), server=server)
    run(copy("one"), server=server)  # the same image again
    refused = run_status(copy("two"))
    assert refused.returncode != 0
    # skopeo logs with logrus, which quotes the message: its double quotes come escaped.
    shown = refused.stderr.replace('\\"', '"')
    assert f'denied: tag "v1.0" of "release/app" is immutable ({RELEASE_RULE})' in shown, shown
