"""A real registry process notifies a real local receiver: every event arrives exactly once and
in order, through endpoint outages, registry restarts and crashes, and with several instances.

Exactly once is checked with a sentinel: once the expected events arrived, one more event is
made and waited for. Delivery is in order and an event leaves the queue only after a 2xx, so a
duplicate of anything before the sentinel would have arrived before it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    OCI_MANIFEST,
    canonical,
    digest_of,
    get_blob,
    image_manifest,
    push_blob,
    push_manifest,
)
from tests.conftest import scaleout_config
from tests.notifications.receiver import Receiver, wait_until
from tests.server import RegistryProcess
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import SeaweedFS

OCTET = "application/octet-stream"
SECRET = "Bearer s3cret-webhook-token"
# Short timeouts and backoff, so outages end quickly; the lease then lasts 2 * 1 + 10 s.
FAST = {"timeout_seconds": 1, "backoff_seconds": 1, "max_backoff_seconds": 2}

# What a test expects of an event: action, repository, target media type, digest, tag.
Expected = tuple[str, str, str | None, str | None, str | None]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def endpoint(receiver: Receiver, path: str = "/events", **settings: Any) -> dict[str, Any]:
    return {"name": path.strip("/"), "url": receiver.url(path), **FAST, **settings}


def notifications(*endpoints: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {"notifications": {"endpoints": list(endpoints)}, **config}


def summary(event: dict[str, Any]) -> Expected:
    target = event["target"]
    return (
        event["action"],
        target["repository"],
        target.get("mediaType"),
        target.get("digest"),
        target.get("tag"),
    )


class Sentinel:
    """Pushes a blob to a repository of its own, pulls and deletes it: three events, of which
    every endpoint of these tests lets at least one through."""

    def __init__(self) -> None:
        self.repository = f"sentinel/{uuid.uuid4().hex[:8]}"
        self.events: list[Expected] = []

    def make(self, client: httpx.Client) -> None:
        _, digest = push_blob(client, self.repository)
        get_blob(client, self.repository, digest)
        assert client.delete(f"/v2/{self.repository}/blobs/{digest}").status_code == 202
        self.events = [
            ("push", self.repository, OCTET, digest, None),
            ("pull", self.repository, OCTET, digest, None),
            ("delete", self.repository, None, digest, None),
        ]


def passes(actions: tuple[str, ...] = (), media_types: tuple[str, ...] = ()) -> Filter:
    """The expected effect of an endpoint's filter (deletes carry no media type)."""
    return lambda e: (
        (not actions or e[0] in actions)
        and (not media_types or e[2] is None or e[2] in media_types)
    )


Filter = Callable[[Expected], bool]
EVERYTHING = passes()


def assert_exactly_once(
    receiver: Receiver,
    client: httpx.Client,
    expected: dict[str, list[Expected]],
    filters: dict[str, Filter] | None = None,
    timeout: float = 60,
) -> dict[str, list[dict[str, Any]]]:
    """Each path receives exactly its expected events (then the sentinel's), in order."""
    for path, events in expected.items():
        receiver.wait_for(len(events), path, timeout)
    sentinel = Sentinel()
    sentinel.make(client)
    received = {}
    for path, events in expected.items():
        tail = list(filter((filters or {}).get(path, EVERYTHING), sentinel.events))
        wait_until(
            lambda path=path, last=tail[-1]: last in map(summary, receiver.accepted(path)), timeout
        )
        received[path] = receiver.accepted(path)
        assert [summary(e) for e in received[path]] == events + tail, path
        assert len({e["id"] for e in received[path]}) == len(received[path])
    return received


def push_image(client: httpx.Client, name: str, tag: str) -> tuple[list[Expected], str, str]:
    """Config, layer and a tagged manifest; the events they make, the manifest's and the
    layer's digest."""
    config, config_digest = push_blob(client, name, canonical({"id": uuid.uuid4().hex}))
    layer, layer_digest = push_blob(client, name)
    manifest = canonical(image_manifest(config, [layer]))
    push_manifest(client, name, tag, manifest)
    digest = digest_of(manifest)
    events: list[Expected] = [
        ("push", name, OCTET, config_digest, None),
        ("push", name, OCTET, layer_digest, None),
        ("push", name, OCI_MANIFEST, digest, tag),
    ]
    return events, digest, layer_digest


def test_push_pull_delete_reach_every_endpoint_through_its_filters(
    start_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    server = start_registry(
        config=notifications(
            endpoint(receiver, headers=[f"Authorization: {SECRET}", "X-Team: registry"]),
            endpoint(receiver, "/deletes", actions=["delete"]),
            endpoint(receiver, "/manifests", media_types=[OCI_MANIFEST]),
            endpoint(receiver, "/pulls", actions=["pull"], media_types=[OCTET]),
        )
    )
    name, other = f"hooks/{uuid.uuid4().hex[:8]}", f"hooks/{uuid.uuid4().hex[:8]}"
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"User-Agent": "webhook-test/1.0"}
    ) as client:
        pushed, digest, layer = push_image(client, name, "v1")
        pulled = client.get(
            f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST, "X-Request-Id": "pull-1"}
        )
        assert pulled.status_code == 200
        assert client.head(f"/v2/{name}/manifests/v1").status_code == 200  # no event
        assert client.get(f"/v2/{name}/manifests/{digest}").status_code == 200
        get_blob(client, name, layer)
        assert client.head(f"/v2/{name}/blobs/{layer}").status_code == 200  # no event
        mounted = client.post(f"/v2/{other}/blobs/uploads/", params={"mount": layer, "from": name})
        assert mounted.status_code == 201
        assert client.delete(f"/v2/{name}/manifests/v1").status_code == 202
        assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
        assert client.delete(f"/v2/{name}/blobs/{layer}").status_code == 202
        assert client.get(f"/v2/{name}/manifests/v1").status_code == 404  # failures: no event

        deletes: list[Expected] = [
            ("delete", name, None, None, "v1"),
            ("delete", name, None, digest, None),
            ("delete", name, None, layer, None),
        ]
        everything = [
            *pushed,
            ("pull", name, OCI_MANIFEST, digest, "v1"),
            ("pull", name, OCI_MANIFEST, digest, None),
            ("pull", name, OCTET, layer, None),
            ("push", other, OCTET, layer, None),
            *deletes,
        ]
        filters = {
            "/deletes": passes(actions=("delete",)),
            "/manifests": passes(media_types=(OCI_MANIFEST,)),
            "/pulls": passes(actions=("pull",), media_types=(OCTET,)),
        }
        received = assert_exactly_once(
            receiver,
            client,
            {
                "/events": everything,
                "/deletes": deletes,
                "/manifests": [e for e in everything if e[2] in (OCI_MANIFEST, None)],
                "/pulls": [("pull", name, OCTET, layer, None)],
            },
            filters,
        )

    events = received["/events"]
    mount = events[len(pushed) + 3]
    assert mount["target"]["fromRepository"] == name
    pull = events[len(pushed)]
    assert pull["request"]["id"] == "pull-1"
    assert pull["request"]["method"] == "GET"
    assert pull["request"]["useragent"] == "webhook-test/1.0"
    assert pull["request"]["host"] == server.host
    assert pull["request"]["addr"].startswith("127.0.0.1:")
    assert pull["target"]["url"] == f"{server.url}/v2/{name}/manifests/{digest}"
    assert pull["target"]["size"] == pull["target"]["length"] == len(pulled.content)
    assert pull["actor"] == {}
    assert pull["source"]["addr"].endswith(":" + server.url.rsplit(":", 1)[1])
    assert pull["source"]["instanceID"]
    for delivery in receiver.deliveries:
        assert delivery.headers["Content-Type"] == (
            "application/vnd.docker.distribution.events.v1+json"
        )
        if delivery.path == "/events":
            assert delivery.headers["Authorization"] == SECRET
            assert delivery.headers["X-Team"] == "registry"
        else:
            assert "Authorization" not in delivery.headers
    assert "s3cret" not in server.log()


def test_events_wait_out_an_endpoint_outage(
    start_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    server = start_registry(config=notifications(endpoint(receiver)))
    name = f"outage/{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # The endpoint fails: events wait and are retried with backoff.
        receiver.status = 500
        first, _, _ = push_image(client, name, "v1")
        wait_until(lambda: receiver.failed() >= 3, 30)
        receiver.status = 202
        expected = first
        receiver.wait_for(len(expected), timeout=30)

        # The endpoint is down: connections refused.
        receiver.stop()
        second, _, _ = push_image(client, name, "v2")
        expected = expected + second
        wait_until(lambda: server.log().count("cannot connect") >= 2, 30)
        receiver.start()
        assert_exactly_once(receiver, client, {"/events": expected})

    log = server.log()
    assert re.search(
        r"webhook events: delivering \d event\(s\) failed: HTTP 500; retrying in 1s", log
    )
    assert "HTTP 500; retrying in 2s" in log  # backoff doubled, up to max_backoff_seconds
    assert "retrying in 4s" not in log
    assert re.search(r"failed: cannot connect .*; retrying in 1s", log)  # reset by the success


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_pending_events_survive_a_registry_restart(
    start_registry: Callable[..., RegistryProcess],
    receiver: Receiver,
    tmp_path: Path,
    how: str,
) -> None:
    """The receiver is down while the registry records events, then the registry stops (or
    crashes: SIGKILL right after the responses) and starts again; nothing is lost."""
    config = notifications(endpoint(receiver))
    data_dir = tmp_path / "data"
    receiver.stop()
    first = start_registry(data_dir=data_dir, config=config)
    name = f"restart/{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=first.url, timeout=30) as client:
        expected, _, _ = push_image(client, name, "v1")
    if how == "stop":
        first.stop()
    else:
        first.kill()
    second = start_registry(data_dir=data_dir, config=config)
    with httpx.Client(base_url=second.url, timeout=30) as client:
        more, _, _ = push_image(client, name, "v2")
        receiver.start()
        assert_exactly_once(receiver, client, {"/events": expected + more})


def test_instances_sharing_a_database_deliver_each_event_once(
    start_registry: Callable[..., RegistryProcess],
    receiver: Receiver,
    seaweedfs: SeaweedFS,
    postgres: PostgresServer,
) -> None:
    prefix = f"hooks{uuid.uuid4().hex[:8]}"
    config = {
        **scaleout_config(seaweedfs, postgres.create_database(prefix), prefix),
        **notifications(endpoint(receiver)),
    }
    instances = [start_registry(config=config) for _ in range(2)]  # 2 workers each
    name = f"scaled/{uuid.uuid4().hex[:8]}"
    a, b = (httpx.Client(base_url=i.url, timeout=30) for i in instances)
    with a, b:
        expected, digest, layer = push_image(a, name, "v1")
        assert b.get(f"/v2/{name}/manifests/v1").status_code == 200
        get_blob(b, name, layer)
        assert a.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
        expected += [
            ("pull", name, OCI_MANIFEST, digest, "v1"),
            ("pull", name, OCTET, layer, None),
            ("delete", name, None, digest, None),
        ]
        # One more outage, so that deliveries resume after backoff on the shared queue.
        receiver.stop()
        more, _, _ = push_image(b, name, "v2")
        receiver.start()
        received = assert_exactly_once(receiver, a, {"/events": expected + more})
    sources = {e["source"]["instanceID"] for e in received["/events"]}
    assert len(sources) >= 2  # events were recorded by several processes
