"""Delivery to one endpoint: the process holding the endpoint's lease sends its queued events in
order, and removes them only once the endpoint answered 2xx; failures are retried with
exponential backoff. Every worker process runs one Deliverer per endpoint; those without the
lease wait and take over when it expires or is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from cargobay import metrics
from cargobay.config import WebhookConfig
from cargobay.errors import Unavailable
from cargobay.notifications.events import ENVELOPE_MEDIA_TYPE, EventFilter, envelope
from cargobay.notifications.queue import EventQueue, QueuedEvent, QueueStore

log = logging.getLogger("cargobay.notifications")

MAX_BATCH = 32  # events per envelope, when several wait
POLL_INTERVAL = 0.5  # how often the lease holder looks for events other processes recorded
LEASE_RETRY = 2.0  # how often the other processes check whether the lease is free
LEASE_MARGIN = 10.0
COUNT_INTERVAL = 5.0  # refresh of the pending count
ERROR_PAUSE = 2.0  # after the queue's database failed


@dataclass(frozen=True, slots=True)
class Endpoint:
    key: str  # names the endpoint's rows in the queue: its name if set, else its URL
    name: str  # in logs and stats
    url: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    backoff: float
    max_backoff: float
    filter: EventFilter

    @property
    def lease_seconds(self) -> float:
        # Renewed before every attempt once `timeout + LEASE_MARGIN / 2` have passed, so an
        # attempt in flight always ends before the lease does.
        return 2 * self.timeout + LEASE_MARGIN

    @property
    def renew_after(self) -> float:
        return self.timeout + LEASE_MARGIN / 2


def endpoints_from(configs: list[WebhookConfig]) -> list[Endpoint]:
    endpoints: list[Endpoint] = []
    used: set[str] = set()
    for index, config in enumerate(configs):
        key = config.name or config.url
        name = config.name or urlsplit(config.url).hostname or config.url
        if key in used or name in used:  # two endpoints must not share a queue or counters
            key, name = f"{key}#{index}", f"{name}#{index}"
        used |= {key, name}
        headers = tuple(
            (name.strip(), value.strip())
            for name, _, value in (header.partition(":") for header in config.headers)
        )
        endpoints.append(
            Endpoint(
                key=key,
                name=name,
                url=config.url,
                headers=headers,
                timeout=float(config.timeout_seconds),
                backoff=float(max(config.backoff_seconds, 0)),
                max_backoff=float(max(config.max_backoff_seconds, config.backoff_seconds)),
                filter=EventFilter(frozenset(config.actions), frozenset(config.media_types)),
            )
        )
    return endpoints


@dataclass
class EndpointStats:
    """Counters of this process (pending: of the whole queue, as last counted)."""

    queued: int = 0  # events recorded for the endpoint
    delivered: int = 0  # events the endpoint accepted (2xx)
    failed_attempts: int = 0  # deliveries that failed (error, timeout or non-2xx)
    pending: int = 0  # events waiting for the endpoint
    delivering: bool = False  # this process holds the endpoint's lease
    last_delivery: float | None = None  # unix time of the last accepted delivery
    last_failure: float | None = None
    statuses: dict[int, int] = field(default_factory=dict)  # answers by HTTP status


class Deliverer:
    def __init__(
        self,
        endpoint: Endpoint,
        queue: EventQueue,
        session: aiohttp.ClientSession,
        owner: str,
        stats: EndpointStats,
    ) -> None:
        self.endpoint = endpoint
        self.queue = queue
        self.session = session
        self.owner = owner
        self.stats = stats
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._renew_at = 0.0  # monotonic time when the lease must be renewed
        self._counted_at = 0.0
        self._backoff = endpoint.backoff
        self._last_failure = float("-inf")

    def wake(self) -> None:
        """Events were recorded for this endpoint."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the attempt in flight (if any)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self._step(await self.queue.ready())
                except Exception as exc:
                    self._note_failure(exc)
                    await self._sleep(ERROR_PAUSE)
        finally:
            if self.stats.delivering:
                await self.release()

    async def release(self) -> None:
        """Give the lease up, so that another process delivers from now on without waiting."""
        self.stats.delivering = False
        self._renew_at = 0.0
        try:
            await self.queue.store.release(self.endpoint.key, self.owner)
        except Exception as exc:  # it expires by itself
            log.warning("webhook %s: could not release the lease: %s", self.endpoint.name, exc)

    async def _step(self, store: QueueStore) -> None:
        self._wake.clear()
        if not await self._hold_lease(store):
            await self._count(store)
            await self._sleep(LEASE_RETRY)
            return
        batch = await store.peek(self.endpoint.key, MAX_BATCH)
        if len(batch) < MAX_BATCH:
            self.stats.pending = len(batch)
        else:
            await self._count(store)
        if not batch:
            await self._sleep(POLL_INTERVAL, wakeable=True)
            return
        if await self._post(batch):
            await store.remove(self.endpoint.key, [event.id for event in batch])
            self.stats.delivered += len(batch)
            self.stats.pending = max(self.stats.pending - len(batch), 0)
            metrics.webhook_delivery(self.endpoint.name, delivered=len(batch))
            metrics.webhook_pending(self.endpoint.name, self.stats.pending)
            self.stats.last_delivery = time.time()
            self._backoff = self.endpoint.backoff
            return
        await self._pause_holding_lease(store, self._backoff)
        self._backoff = min(self._backoff * 2 or 1.0, self.endpoint.max_backoff)

    async def _hold_lease(self, store: QueueStore) -> bool:
        now = time.monotonic()
        if self.stats.delivering and now < self._renew_at:
            return True
        held = await store.claim(self.endpoint.key, self.owner, self.endpoint.lease_seconds)
        if held and not self.stats.delivering:
            log.info("webhook %s: this process delivers its events", self.endpoint.name)
        self.stats.delivering = held
        self._renew_at = now + self.endpoint.renew_after if held else 0.0
        return held

    async def _post(self, batch: list[QueuedEvent]) -> bool:
        endpoint = self.endpoint
        headers = {"Content-Type": ENVELOPE_MEDIA_TYPE, **dict(endpoint.headers)}
        try:
            async with self.session.post(
                endpoint.url,
                data=envelope([event.event for event in batch]),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                return True
            reason = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = _describe(exc, endpoint.timeout)
        self.stats.failed_attempts += 1
        self.stats.last_failure = time.time()
        metrics.webhook_delivery(endpoint.name, failed=1)
        # Never the headers (credentials) nor the URL (it may carry a token).
        log.warning(
            "webhook %s: delivering %d event(s) failed: %s; retrying in %gs",
            endpoint.name,
            len(batch),
            reason,
            self._backoff,
        )
        return False

    async def _pause_holding_lease(self, store: QueueStore, seconds: float) -> None:
        """Back off, renewing the lease meanwhile: the events wait here, not elsewhere."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self._sleep(min(left, self.endpoint.renew_after))
            if time.monotonic() < deadline and not self._stopping.is_set():
                await self._hold_lease(store)

    async def _count(self, store: QueueStore) -> None:
        now = time.monotonic()
        if now - self._counted_at >= COUNT_INTERVAL:
            self._counted_at = now
            self.stats.pending = await store.count(self.endpoint.key)
            metrics.webhook_pending(self.endpoint.name, self.stats.pending)

    async def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        event = self._wake if wakeable else self._stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def _note_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_failure < 60:  # a line per outage, not one per retry
            return
        self._last_failure = now
        if isinstance(exc, Unavailable):
            log.warning("webhook %s: event queue unavailable: %s", self.endpoint.name, exc.message)
        else:
            log.exception("webhook %s: delivery failed unexpectedly", self.endpoint.name)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return type(exc).__name__
