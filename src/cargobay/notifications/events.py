"""Events and envelopes in the format of distribution's notifications, and endpoint filters.

An event is a JSON object: id, timestamp, action, target (what changed), request (the HTTP
request that changed it), actor (who made it) and source (which registry process). Endpoints
receive them in an envelope `{"events": [...]}` with the media type ENVELOPE_MEDIA_TYPE.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ENVELOPE_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"
ACTIONS = ("push", "pull", "delete")


@dataclass(frozen=True, slots=True)
class Target:
    """What an event is about. Deletes carry only repository and digest (or tag), as in
    distribution."""

    repository: str
    digest: str | None = None
    media_type: str | None = None
    size: int | None = None
    url: str | None = None
    tag: str | None = None
    from_repository: str | None = None  # a blob mounted from there

    def as_json(self) -> dict[str, Any]:
        target: dict[str, Any] = {}
        if self.media_type is not None:
            target["mediaType"] = self.media_type
        if self.digest is not None:
            target["digest"] = self.digest
        if self.size is not None:
            target["size"] = self.size
            target["length"] = self.size  # deprecated in distribution, still sent
        target["repository"] = self.repository
        if self.from_repository is not None:
            target["fromRepository"] = self.from_repository
        if self.url is not None:
            target["url"] = self.url
        if self.tag is not None:
            target["tag"] = self.tag
        return target


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: str
    addr: str
    host: str
    method: str
    useragent: str


@dataclass(frozen=True, slots=True)
class Source:
    addr: str  # hostname:port of this registry
    instance_id: str  # one per registry process


def build_event(
    action: str,
    target: Target,
    request: RequestRecord,
    actor: str | None,
    source: Source,
    *,
    now: datetime.datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    timestamp = (now or datetime.datetime.now(datetime.UTC)).isoformat()
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": timestamp.replace("+00:00", "Z"),
        "action": action,
        "target": target.as_json(),
        "request": {
            "id": request.id,
            "addr": request.addr,
            "host": request.host,
            "method": request.method,
            "useragent": request.useragent,
        },
        "actor": {"name": actor} if actor else {},
        "source": {"addr": source.addr, "instanceID": source.instance_id},
    }


def encode_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def envelope(encoded_events: Sequence[str]) -> bytes:
    """The request body for events already encoded by encode_event, in order."""
    return ('{"events":[' + ",".join(encoded_events) + "]}").encode()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """An endpoint's filter: empty sets let everything through. Events without a media type
    (deletes) are filtered by action only."""

    actions: frozenset[str] = frozenset()
    media_types: frozenset[str] = frozenset()

    def matches(self, action: str, target: Target) -> bool:
        if self.actions and action not in self.actions:
            return False
        return not (
            self.media_types
            and target.media_type is not None
            and target.media_type not in self.media_types
        )
