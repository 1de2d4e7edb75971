"""Envelopes in distribution's format, endpoint filters and endpoint settings."""

from __future__ import annotations

import datetime
import json

from aiohttp import web

from cargobay.config import Config, NotificationsConfig, WebhookConfig
from cargobay.notifications import NOTIFIER_KEY, setup_notifications
from cargobay.notifications.delivery import endpoints_from
from cargobay.notifications.events import (
    ENVELOPE_MEDIA_TYPE,
    EventFilter,
    RequestRecord,
    Source,
    Target,
    build_event,
    encode_event,
    envelope,
)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "ab" * 32
REQUEST = RequestRecord("req-1", "10.0.0.1:4242", "registry.local:5000", "PUT", "test/0.1")
SOURCE = Source("host-a:5000", "instance-1")
NOW = datetime.datetime(2024, 3, 9, 14, 44, 26, 402973, tzinfo=datetime.UTC)


def test_push_event_has_distributions_fields() -> None:
    target = Target(
        "library/test", DIGEST, MANIFEST, 708, f"https://r/v2/library/test/manifests/{DIGEST}", "v1"
    )
    event = build_event("push", target, REQUEST, "alice", SOURCE, now=NOW, event_id="e-1")
    assert event == {
        "id": "e-1",
        "timestamp": "2024-03-09T14:44:26.402973Z",
        "action": "push",
        "target": {
            "mediaType": MANIFEST,
            "digest": DIGEST,
            "size": 708,
            "length": 708,
            "repository": "library/test",
            "url": f"https://r/v2/library/test/manifests/{DIGEST}",
            "tag": "v1",
        },
        "request": {
            "id": "req-1",
            "addr": "10.0.0.1:4242",
            "host": "registry.local:5000",
            "method": "PUT",
            "useragent": "test/0.1",
        },
        "actor": {"name": "alice"},
        "source": {"addr": "host-a:5000", "instanceID": "instance-1"},
    }


def test_delete_events_carry_only_repository_and_digest_or_tag() -> None:
    manifest = build_event("delete", Target("a/b", DIGEST), REQUEST, None, SOURCE)
    assert manifest["target"] == {"digest": DIGEST, "repository": "a/b"}
    assert manifest["actor"] == {}  # anonymous, as distribution sends it
    tag = build_event("delete", Target("a/b", tag="v1"), REQUEST, None, SOURCE)
    assert tag["target"] == {"repository": "a/b", "tag": "v1"}


def test_mount_names_the_source_repository() -> None:
    target = Target("a/c", DIGEST, "application/octet-stream", 3, from_repository="a/b")
    assert build_event("push", target, REQUEST, None, SOURCE)["target"]["fromRepository"] == "a/b"


def test_envelope_holds_the_events_in_order() -> None:
    events = [build_event("pull", Target("a/b", DIGEST), REQUEST, None, SOURCE) for _ in range(3)]
    body = envelope([encode_event(e) for e in events])
    assert json.loads(body) == {"events": events}
    assert json.loads(envelope([])) == {"events": []}
    assert ENVELOPE_MEDIA_TYPE == "application/vnd.docker.distribution.events.v1+json"


def test_event_ids_are_unique() -> None:
    ids = {build_event("pull", Target("a/b"), REQUEST, None, SOURCE)["id"] for _ in range(100)}
    assert len(ids) == 100


def test_empty_filter_lets_everything_through() -> None:
    everything = EventFilter()
    for action in ("push", "pull", "delete"):
        assert everything.matches(action, Target("a/b", DIGEST, MANIFEST))
        assert everything.matches(action, Target("a/b", DIGEST))


def test_filter_by_action() -> None:
    deletes = EventFilter(actions=frozenset({"delete"}))
    assert deletes.matches("delete", Target("a/b", DIGEST))
    assert not deletes.matches("push", Target("a/b", DIGEST, MANIFEST))
    assert not deletes.matches("pull", Target("a/b", DIGEST, "application/octet-stream"))


def test_filter_by_media_type_passes_events_without_one() -> None:
    manifests = EventFilter(media_types=frozenset({MANIFEST}))
    assert manifests.matches("push", Target("a/b", DIGEST, MANIFEST))
    assert not manifests.matches("push", Target("a/b", DIGEST, "application/octet-stream"))
    assert manifests.matches("delete", Target("a/b", DIGEST))  # deletes carry no media type
    both = EventFilter(frozenset({"push"}), frozenset({MANIFEST}))
    assert both.matches("push", Target("a/b", DIGEST, MANIFEST))
    assert not both.matches("pull", Target("a/b", DIGEST, MANIFEST))
    assert not both.matches("delete", Target("a/b", DIGEST))


def test_endpoint_settings() -> None:
    (endpoint,) = endpoints_from(
        [
            WebhookConfig(
                url="https://hooks.example.com/registry?token=x",
                headers=["Authorization: Bearer a:b", "X-Empty:"],
                timeout_seconds=3,
                backoff_seconds=2,
                max_backoff_seconds=60,
                actions=["push"],
                media_types=[MANIFEST],
            )
        ]
    )
    assert endpoint.name == "hooks.example.com"  # never the URL: it may hold a token
    assert endpoint.key == "https://hooks.example.com/registry?token=x"
    assert endpoint.headers == (("Authorization", "Bearer a:b"), ("X-Empty", ""))
    assert (endpoint.timeout, endpoint.backoff, endpoint.max_backoff) == (3, 2, 60)
    assert endpoint.filter == EventFilter(frozenset({"push"}), frozenset({MANIFEST}))
    # An attempt in flight always ends before the lease runs out.
    assert endpoint.renew_after + endpoint.timeout < endpoint.lease_seconds


def test_endpoints_never_share_a_queue() -> None:
    endpoints = endpoints_from(
        [
            WebhookConfig(url="http://a.local/one"),
            WebhookConfig(url="http://a.local/two"),
            WebhookConfig(url="http://b.local/", name="b"),
            WebhookConfig(url="http://c.local/", name="b"),
        ]
    )
    assert len({e.key for e in endpoints}) == 4
    assert len({e.name for e in endpoints}) == 4
    assert [e.name for e in endpoints][:3] == ["a.local", "a.local#1", "b"]
    assert endpoints[2].key == "b"  # a named endpoint keeps its queue when its URL changes


def test_no_endpoints_no_notifier() -> None:
    app = web.Application()
    setup_notifications(app, Config(), None)  # type: ignore[arg-type]
    assert NOTIFIER_KEY not in app
    assert len(app.cleanup_ctx) == 0


def test_endpoints_attach_a_notifier() -> None:
    app = web.Application()
    config = Config(notifications=NotificationsConfig([WebhookConfig(url="http://a.local/")]))
    setup_notifications(app, config, None)  # type: ignore[arg-type]
    assert NOTIFIER_KEY in app
    assert len(app.cleanup_ctx) == 1
    assert app[NOTIFIER_KEY].stats() == {
        "a.local": {
            "queued": 0,
            "delivered": 0,
            "failed_attempts": 0,
            "pending": 0,
            "delivering": False,
            "last_delivery": None,
            "last_failure": None,
            "statuses": {},
        }
    }
