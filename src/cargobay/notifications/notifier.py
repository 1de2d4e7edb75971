"""The notifier of one worker process: records events in the durable queue (the request waits
for the commit) and runs a Deliverer per endpoint in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from cargobay.api.common import identity
from cargobay.config import Config
from cargobay.logs import request_id
from cargobay.notifications.delivery import Deliverer, Endpoint, EndpointStats, endpoints_from
from cargobay.notifications.events import (
    RequestRecord,
    Source,
    Target,
    build_event,
    encode_event,
)
from cargobay.notifications.postgres_queue import PostgresQueueStore
from cargobay.notifications.queue import EventQueue, QueueStore, Row
from cargobay.notifications.sqlite_queue import SQLiteQueueStore
from cargobay.registry.registry import Registry

log = logging.getLogger("cargobay.notifications")

STOP_GRACE = 2.0  # seconds, beyond the endpoint timeout, for an attempt in flight to finish


class Notifier:
    def __init__(self, endpoints: Sequence[Endpoint], queue: EventQueue) -> None:
        self.endpoints = list(endpoints)
        self.queue = queue
        self.instance_id = str(uuid.uuid4())  # this process, in events' source and leases
        self.hostname = socket.gethostname()
        self.counters = {e.key: EndpointStats() for e in self.endpoints}
        self._deliverers: list[Deliverer] = []

    async def publish(self, request: web.Request, action: str, targets: Sequence[Target]) -> None:
        """Record one event per target for every endpoint whose filter lets it through;
        returns once they are committed (so before the response is sent)."""
        record = request_record(request)
        source = Source(f"{self.hostname}:{_local_port(request)}", self.instance_id)
        await self._record(action, targets, record, identity(request).user, source)

    async def publish_unrequested(self, action: str, targets: Sequence[Target], port: int) -> None:
        """Record events of the registry's own doing (retention policies) as publish does:
        the same envelope, with an empty request and actor; `port` is the registry's."""
        source = Source(f"{self.hostname}:{port}", self.instance_id)
        await self._record(action, targets, NO_REQUEST, None, source)

    async def _record(
        self,
        action: str,
        targets: Sequence[Target],
        record: RequestRecord,
        actor: str | None,
        source: Source,
    ) -> None:
        rows: list[Row] = []
        for target in targets:
            keys = [e.key for e in self.endpoints if e.filter.matches(action, target)]
            if keys:
                event = encode_event(build_event(action, target, record, actor, source))
                rows += [(key, event) for key in keys]
        if not rows:
            return
        await self.queue.append(rows)
        for key, _ in rows:
            self.counters[key].queued += 1
        touched = {key for key, _ in rows}
        for deliverer in self._deliverers:
            if deliverer.endpoint.key in touched:
                deliverer.wake()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per endpoint name: this process's delivery counters (see EndpointStats)."""
        return {
            e.name: {
                "queued": c.queued,
                "delivered": c.delivered,
                "failed_attempts": c.failed_attempts,
                "pending": c.pending,
                "delivering": c.delivering,
                "last_delivery": c.last_delivery,
                "last_failure": c.last_failure,
                "statuses": dict(c.statuses),
            }
            for e in self.endpoints
            for c in (self.counters[e.key],)
        }

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: deliver in the background while the app runs."""
        session = aiohttp.ClientSession(headers={"User-Agent": "cargobay-notifications"})
        self._deliverers = [
            Deliverer(e, self.queue, session, self.instance_id, self.counters[e.key])
            for e in self.endpoints
        ]
        tasks = [asyncio.create_task(d.run()) for d in self._deliverers]
        for endpoint in self.endpoints:
            log.info(
                "webhook %s: timeout %gs, backoff %g-%gs, actions %s, media types %s",
                endpoint.name,
                endpoint.timeout,
                endpoint.backoff,
                endpoint.max_backoff,
                sorted(endpoint.filter.actions) or "all",
                sorted(endpoint.filter.media_types) or "all",
            )
        try:
            yield
        finally:
            for deliverer in self._deliverers:
                deliverer.stop()
            grace = max((e.timeout for e in self.endpoints), default=0) + STOP_GRACE
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for deliverer, task in zip(self._deliverers, tasks, strict=True):
                if task in late and deliverer.stats.delivering:
                    await deliverer.release()
            await session.close()
            await self.queue.close()


NOTIFIER_KEY = web.AppKey("notifier", Notifier)
NO_REQUEST = RequestRecord(id="", addr="", host="", method="", useragent="")


def build_queue_store(config: Config) -> QueueStore:
    if config.metadata.driver == "postgres":
        assert config.metadata.url is not None  # checked by load_config
        return PostgresQueueStore(config.metadata.url)
    return SQLiteQueueStore(config.metadata_path, synchronous=config.metadata.synchronous)


def setup_notifications(app: web.Application, config: Config, registry: Registry) -> None:
    """Webhooks: nothing at all without endpoints; otherwise a Notifier on the app (the
    handlers publish through it) delivering in the background. `registry` is not needed today:
    events are produced by the handlers, which know the request."""
    del registry
    notifier = build_notifier(config)
    if notifier is None:
        return
    app[NOTIFIER_KEY] = notifier
    app.cleanup_ctx.append(notifier.run)


def build_notifier(config: Config) -> Notifier | None:
    """None without endpoints. Outside the server (`cargobay retention`) it only records
    events: the registry's processes deliver them from the durable queue."""
    if not config.notifications.endpoints:
        return None
    return Notifier(
        endpoints_from(config.notifications.endpoints), EventQueue(build_queue_store(config))
    )


def stats(app: web.Application) -> dict[str, dict[str, Any]]:
    """Delivery counters per endpoint name; empty without endpoints."""
    notifier = app.get(NOTIFIER_KEY)
    return {} if notifier is None else notifier.stats()


def request_record(request: web.Request) -> RequestRecord:
    return RequestRecord(
        id=request_id(request),  # the client's X-Request-Id, or the one the logs show
        addr=_address(request.transport, "peername"),
        host=request.host,
        method=request.method,
        useragent=request.headers.get("User-Agent", ""),
    )


def _address(transport: asyncio.BaseTransport | None, which: str) -> str:
    address = transport.get_extra_info(which) if transport is not None else None
    if not isinstance(address, tuple) or len(address) < 2:
        return ""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _local_port(request: web.Request) -> str:
    with contextlib.suppress(IndexError):
        return _address(request.transport, "sockname").rsplit(":", 1)[1]
    return ""
