"""Prometheus metrics, served on their own listener (`metrics.listen`), off by default.

Workers are separate processes, so metrics use prometheus_client's multiprocess mode: each
process writes its samples to files in PROMETHEUS_MULTIPROC_DIR and the metrics listener (a
thread of the supervisor, or of the only worker) adds them up at scrape time. That mode is
chosen when prometheus_client is first imported, so `serve` sets the variable before anything
imports it, and this module imports it only inside functions.

What is measured: every request (by route, method and status: count, duration, bytes in and
out), upload requests in progress, every metadata-store and blob-store call (duration and
errors), webhook deliveries (accepted events, failed attempts, events pending), and registry
totals (repositories, blobs, stored bytes, manifests, tags, open upload sessions) refreshed by
every worker every STATISTICS_INTERVAL seconds, and the usage of every quota (lifecycle.quota).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cargobay.errors import RegistryError, Unavailable

log = logging.getLogger("cargobay")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATISTICS_INTERVAL = 30.0
UPLOAD_ROUTE_PARTS = ("/blobs/uploads/",)
# Expected outcomes of store calls, not failures of the store.
_EXPECTED = (
    "MissingReferences",
    "TagFixed",
    "QuotaExceeded",
    "QuotaNotSetUp",
    "UploadLocked",
    "UploadMissing",
    "FileNotFoundError",
)

T = TypeVar("T")


class Metrics:
    """The metric objects of this process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "cargobay_http_requests_total", "HTTP requests", ["route", "method", "status"]
        )
        self.duration = Histogram(
            "cargobay_http_request_duration_seconds",
            "Time from request to the last byte of the response",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bytes_in = Counter(
            "cargobay_http_request_bytes_total", "Request body bytes", ["route"]
        )
        self.bytes_out = Counter(
            "cargobay_http_response_bytes_total", "Response body bytes", ["route"]
        )
        self.uploads_in_progress = Gauge(
            "cargobay_upload_requests_in_progress",
            "Upload requests (POST, PATCH, PUT of blob uploads) being served",
            multiprocess_mode="livesum",
        )
        self.store_duration = Histogram(
            "cargobay_store_call_duration_seconds",
            "Metadata-store and blob-store calls",
            ["store", "driver", "operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        self.store_errors = Counter(
            "cargobay_store_errors_total",
            "Failed metadata-store and blob-store calls",
            ["store", "driver", "operation"],
        )
        self.webhook_delivered = Counter(
            "cargobay_webhook_events_delivered_total", "Events endpoints accepted", ["endpoint"]
        )
        self.webhook_failures = Counter(
            "cargobay_webhook_delivery_failures_total",
            "Failed delivery attempts (error, timeout or non-2xx answer)",
            ["endpoint"],
        )
        self.webhook_pending = Gauge(
            "cargobay_webhook_events_pending",
            "Events waiting in the durable queue, as last counted",
            ["endpoint"],
            multiprocess_mode="mostrecent",
        )
        self.gc_collected = Counter(
            "cargobay_gc_collected_total",
            "Blob links and blobs removed by garbage collection",
            ["kind"],
        )
        self.gc_bytes = Counter(
            "cargobay_gc_reclaimed_bytes_total", "Bytes deleted from the blob store by collection"
        )
        self.gc_backlog = Gauge(
            "cargobay_gc_backlog",
            "Reviews waiting (due or not) and tombstones whose bytes are not yet deleted",
            ["queue"],
            multiprocess_mode="mostrecent",
        )
        self.gc_backlog_age = Gauge(
            "cargobay_gc_backlog_oldest_age_seconds",
            "Age of the oldest review waiting",
            multiprocess_mode="mostrecent",
        )
        self.gc_last_run = Gauge(
            "cargobay_gc_last_run_timestamp_seconds",
            "When the last collection ended",
            multiprocess_mode="mostrecent",
        )
        self.gc_last_duration = Gauge(
            "cargobay_gc_last_run_duration_seconds",
            "How long the last collection took",
            multiprocess_mode="mostrecent",
        )
        self.retention_deleted = Counter(
            "cargobay_retention_deleted_total",
            "Tags and manifests deleted by retention policies",
            ["kind"],
        )
        self.retention_last_run = Gauge(
            "cargobay_retention_last_run_timestamp_seconds",
            "When the retention policies were last applied",
            multiprocess_mode="mostrecent",
        )
        self.quota_used_bytes = Gauge(
            "cargobay_quota_used_bytes",
            "Bytes charged to the quota (each blob once)",
            ["quota"],
            multiprocess_mode="mostrecent",
        )
        self.quota_limit_bytes = Gauge(
            "cargobay_quota_limit_bytes",
            "The quota's max_bytes (absent: unlimited)",
            ["quota"],
            multiprocess_mode="mostrecent",
        )
        self.quota_used_tags = Gauge(
            "cargobay_quota_used_tags",
            "Tags in the quota's repositories",
            ["quota"],
            multiprocess_mode="mostrecent",
        )
        self.quota_limit_tags = Gauge(
            "cargobay_quota_limit_tags",
            "The quota's max_tags (absent: unlimited)",
            ["quota"],
            multiprocess_mode="mostrecent",
        )
        self.quota_repositories = Gauge(
            "cargobay_quota_repositories",
            "Repositories the quota counts",
            ["quota"],
            multiprocess_mode="mostrecent",
        )
        self.totals = {
            name: Gauge(
                f"cargobay_{name}",
                help_text,
                multiprocess_mode="mostrecent",
            )
            for name, help_text in (
                ("repositories", "Repositories"),
                ("blobs", "Blobs stored (until garbage collection)"),
                ("blob_bytes", "Bytes of the blobs stored"),
                ("manifests", "Manifests"),
                ("tags", "Tags"),
                ("upload_sessions", "Open upload sessions"),
            )
        }

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)
        if bytes_in:
            self.bytes_in.labels(route).inc(bytes_in)
        if bytes_out:
            self.bytes_out.labels(route).inc(bytes_out)


_current: Metrics | None = None


def current() -> Metrics | None:
    """This process's metrics; None when metrics are off."""
    global _current
    if _current is None and os.environ.get(MULTIPROC_ENV):
        _current = Metrics()
    return _current


def prepare_multiprocess_dir() -> str:
    """Called by `serve` before any worker starts and before prometheus_client is imported."""
    folder = tempfile.mkdtemp(prefix="cargobay-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    return folder


def serve_metrics(listen: tuple[str, int]) -> Callable[[], None]:
    """Start the metrics listener (a thread) over all processes' samples; returns a stop
    function that also removes the samples folder."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    folder = os.environ[MULTIPROC_ENV]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    server, thread = start_http_server(listen[1], listen[0], registry=registry)
    log.info("metrics on http://%s:%d/metrics", *server.server_address[:2])

    def stop() -> None:
        server.shutdown()
        thread.join(5)
        shutil.rmtree(folder, ignore_errors=True)

    return stop


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (called by the supervisor)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def webhook_delivery(endpoint: str, *, delivered: int = 0, failed: int = 0) -> None:
    metrics = current()
    if metrics is not None:
        if delivered:
            metrics.webhook_delivered.labels(endpoint).inc(delivered)
        if failed:
            metrics.webhook_failures.labels(endpoint).inc(failed)


def webhook_pending(endpoint: str, pending: int) -> None:
    metrics = current()
    if metrics is not None:
        metrics.webhook_pending.labels(endpoint).set(pending)


def gc_collection(report: Any, backlog: Any) -> None:
    """Record a garbage collection (a lifecycle.gc.CollectionReport, a metadata ReviewBacklog)."""
    metrics = current()
    if metrics is None:
        return
    metrics.gc_collected.labels("link").inc(len(report.links))
    metrics.gc_collected.labels("blob").inc(len(report.blobs))
    metrics.gc_bytes.inc(report.bytes)
    metrics.gc_backlog.labels("links").set(backlog.links)
    metrics.gc_backlog.labels("blobs").set(backlog.blobs)
    metrics.gc_backlog.labels("tombstones").set(backlog.tombstones)
    oldest = backlog.oldest_since
    metrics.gc_backlog_age.set(0 if oldest is None else max(time.time() - oldest, 0))
    metrics.gc_last_run.set(time.time())
    metrics.gc_last_duration.set(report.seconds)


def retention_run(report: Any) -> None:
    """Record a run of the retention policies (a lifecycle.retention.RetentionReport)."""
    metrics = current()
    if metrics is None:
        return
    if not report.dry_run:
        metrics.retention_deleted.labels("tag").inc(report.count("tag"))
        metrics.retention_deleted.labels("manifest").inc(report.count("manifest"))
    metrics.retention_last_run.set(time.time())


def quota_usage(reports: Any) -> None:
    """Record the usage of every quota (lifecycle.quota.QuotaReport list)."""
    metrics = current()
    if metrics is None:
        return
    for report in reports:
        key = report.quota.key
        metrics.quota_used_bytes.labels(key).set(report.usage.bytes)
        metrics.quota_used_tags.labels(key).set(report.usage.tags)
        metrics.quota_repositories.labels(key).set(report.usage.repositories)
        if report.quota.max_bytes is not None:
            metrics.quota_limit_bytes.labels(key).set(report.quota.max_bytes)
        if report.quota.max_tags is not None:
            metrics.quota_limit_tags.labels(key).set(report.quota.max_tags)


def instrument(store: T, kind: str) -> T:
    """Time every coroutine method of a store and count its failures, in place."""
    metrics = current()
    if metrics is None:
        return store
    driver = type(store).__name__
    for name, method in inspect.getmembers(store, inspect.iscoroutinefunction):
        if not name.startswith("_"):
            setattr(store, name, _timed(method, metrics, kind, driver, name))
    return store


def _timed(
    method: Callable[..., Awaitable[Any]], metrics: Metrics, kind: str, driver: str, name: str
) -> Callable[..., Awaitable[Any]]:
    duration = metrics.store_duration.labels(kind, driver, name)
    errors = metrics.store_errors.labels(kind, driver, name)

    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        except Unavailable:
            errors.inc()
            raise
        except Exception as exc:
            if not isinstance(exc, RegistryError) and type(exc).__name__ not in _EXPECTED:
                errors.inc()
            raise
        finally:
            duration.observe(time.perf_counter() - started)

    return timed


async def refresh_totals(statistics: Callable[[], Awaitable[Any]]) -> None:
    """Keep the registry totals current (run by one worker)."""
    metrics = current()
    if metrics is None:
        return
    while True:
        try:
            stats = await statistics()
            values = {
                "repositories": stats.repositories,
                "blobs": stats.blobs,
                "blob_bytes": stats.blob_bytes,
                "manifests": stats.manifests,
                "tags": stats.tags,
                "upload_sessions": stats.uploads,
            }
            for name, value in values.items():
                metrics.totals[name].set(value)
        except Unavailable as exc:
            log.warning("metrics totals not refreshed: %s", exc.message)
        await asyncio.sleep(STATISTICS_INTERVAL)
