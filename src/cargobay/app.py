"""The one place that wires configuration, stores, the registry and the HTTP layer together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from cargobay import metrics
from cargobay.api.auth import auth_middleware
from cargobay.api.common import CONFIG_KEY, GUARD_KEY, REGISTRY_KEY, SHUTTING_DOWN_KEY
from cargobay.api.errors import errors_middleware
from cargobay.api.lifecycle import IN_FLIGHT_KEY, RequestsInFlight, lifecycle_middleware
from cargobay.api.limits import rate_limit_middleware
from cargobay.api.routes import add_routes
from cargobay.auth.guard import Guard, TokenService
from cargobay.auth.htpasswd import Htpasswd
from cargobay.auth.policy import DEFAULT_RULES, AccessPolicy, Rule
from cargobay.auth.robots import RobotTokens
from cargobay.auth.tokens import TokenSigner, TokenVerifier, load_certificates, load_jwks
from cargobay.config import Config
from cargobay.errors import Unavailable
from cargobay.lifecycle.gc import GarbageCollector
from cargobay.lifecycle.immutable import ImmutableTags
from cargobay.lifecycle.quota import Quotas
from cargobay.lifecycle.retention import Retention
from cargobay.logs import add_request_id
from cargobay.metadata.base import MetadataStore
from cargobay.metadata.postgres import PostgresMetadataStore
from cargobay.metadata.sqlite import SQLiteMetadataStore
from cargobay.notifications import NOTIFIER_KEY, publish, setup_notifications
from cargobay.registry.registry import Registry
from cargobay.storage.base import BlobStore
from cargobay.storage.filesystem import FilesystemBlobStore
from cargobay.storage.s3 import S3BlobStore

log = logging.getLogger("cargobay")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
UPLOAD_EXPIRY_INTERVAL = 3600.0
COLLECTS_GARBAGE_KEY = web.AppKey("collects_garbage", bool)
PULL_FLUSH_TIMEOUT = 10.0


def build_blob_store(config: Config) -> BlobStore:
    if config.storage.driver == "s3":
        s3 = config.storage.s3
        return S3BlobStore(
            s3.bucket,
            endpoint=s3.endpoint,
            region=s3.region,
            prefix=s3.prefix,
            path_style=s3.path_style,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            session_token=s3.session_token,
            redirect=s3.redirect,
            redirect_expiry_seconds=s3.redirect_expiry_seconds,
            part_size_mib=s3.part_size_mib,
        )
    return FilesystemBlobStore(config.storage_path)


def build_metadata_store(config: Config) -> MetadataStore:
    if config.metadata.driver == "postgres":
        assert config.metadata.url is not None  # checked by load_config
        return PostgresMetadataStore(config.metadata.url, pool_size=config.metadata.pool_size)
    return SQLiteMetadataStore(config.metadata_path, synchronous=config.metadata.synchronous)


def build_registry(config: Config) -> Registry:
    blobs = metrics.instrument(build_blob_store(config), "blobs")
    metadata = metrics.instrument(build_metadata_store(config), "metadata")
    immutable = ImmutableTags.from_config(config.immutable_tags)
    return Registry(
        blobs,
        metadata,
        config.registry,
        immutable,
        gc_delay_seconds=config.gc.delay_seconds,
        quotas=Quotas.from_config(metadata, config.quotas),
    )


async def _add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]


def build_guard(config: Config, metadata: MetadataStore | None = None) -> Guard | None:
    """None when authentication is off (no htpasswd file configured)."""
    if config.auth.htpasswd is None:
        return None
    members = {g.name: g.users for g in config.auth.groups}

    def users(names: list[str]) -> tuple[str, ...]:
        expanded = [m for n in names for m in (members[n[6:]] if n.startswith("group:") else [n])]
        return tuple(expanded)

    rules = tuple(
        Rule(users(r.users), tuple(r.repositories), tuple(r.actions)) for r in config.auth.access
    )
    if config.auth.admins:
        rules = (*(rules or DEFAULT_RULES), Rule(tuple(config.auth.admins), ("*",), ("*",)))
    token = config.auth.token
    tokens = None
    if token.issuer:
        keys = {}
        signer = None
        if token.signing_key:
            signer = TokenSigner(Path(token.signing_key), token.issuer, token.expiration_seconds)
        elif config.secret:
            signer = TokenSigner.from_secret(config.secret, token.issuer, token.expiration_seconds)
        if signer is not None:
            keys[signer.kid] = signer.public_key
        if token.jwks:
            keys.update(load_jwks(token.jwks))
        roots = load_certificates(token.root_certificates) if token.root_certificates else []
        verifier = TokenVerifier(keys, token.issuer, token.service, roots)
        tokens = TokenService(signer, verifier, token.service, token.realm)
    return Guard(
        Htpasswd(config.auth.htpasswd),
        AccessPolicy(rules or DEFAULT_RULES),
        config.auth.realm,
        tokens=tokens,
        robots=RobotTokens(metadata) if metadata is not None else None,
    )


def create_app(
    config: Config, registry: Registry | None = None, *, collect_garbage: bool = True
) -> web.Application:
    """The HTTP application. `collect_garbage=False`: another process (the supervisor's
    maintenance process, see run_maintenance) collects garbage for this one."""
    middlewares: list[Middleware] = [lifecycle_middleware, errors_middleware, auth_middleware]
    limit = rate_limit_middleware(config.rate_limit)
    if limit is not None:
        middlewares.append(limit)
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app[CONFIG_KEY] = config
    app[COLLECTS_GARBAGE_KEY] = collect_garbage
    app[REGISTRY_KEY] = registry or build_registry(config)
    app[GUARD_KEY] = build_guard(config, app[REGISTRY_KEY].metadata)
    app[SHUTTING_DOWN_KEY] = asyncio.Event()
    app[IN_FLIGHT_KEY] = RequestsInFlight()
    app.on_response_prepare.append(_add_api_version)
    app.on_response_prepare.append(add_request_id)
    app.cleanup_ctx.append(_lifecycle)
    setup_notifications(app, config, app[REGISTRY_KEY])
    # After the notifier: torn down before it, so a retention run's events still get queued.
    app.cleanup_ctx.append(_pull_times_and_retention)
    add_routes(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY_KEY]
    tasks = [
        asyncio.create_task(_expire_uploads(registry)),
        asyncio.create_task(metrics.refresh_totals(registry.metadata.statistics)),
    ]
    await _set_up_quotas(registry)
    if registry.quotas.quotas:
        tasks.append(asyncio.create_task(registry.quotas.export_periodically()))
    gc = app[CONFIG_KEY].gc
    if gc.enabled and app[COLLECTS_GARBAGE_KEY]:
        collector = GarbageCollector(registry.metadata, registry.blobs, gc)
        tasks.append(asyncio.create_task(collector.run_periodically()))
        tasks.append(asyncio.create_task(collector.sweep_periodically()))
    yield
    await _cancel(tasks)
    await registry.blobs.close()
    await registry.metadata.close()


async def _pull_times_and_retention(app: web.Application) -> AsyncIterator[None]:
    """Write noted manifest pulls in batches (and once more on the way out); apply the
    retention policies every retention.interval_seconds."""
    registry, config = app[REGISTRY_KEY], app[CONFIG_KEY]
    tasks = [asyncio.create_task(registry.pulls.run())]
    if config.retention.policies:
        notifier, port = app.get(NOTIFIER_KEY), config.host_port[1]

        async def notify(repository: str, reference: str) -> None:
            await publish.deleted_by_retention(notifier, port, repository, reference)

        retention = Retention(registry.metadata, config.retention, registry.immutable, notify)
        tasks.append(asyncio.create_task(retention.run_periodically()))
    yield
    await _cancel(tasks)
    try:
        await asyncio.wait_for(registry.pulls.flush(), PULL_FLUSH_TIMEOUT)
    except (Unavailable, TimeoutError) as exc:
        log.warning("last pull times not recorded: %s", exc)


async def _set_up_quotas(registry: Registry) -> None:
    """Quotas new to the metadata get their usage computed before this worker serves; if the
    database cannot answer now, the first push under such a quota does it. Quotas this
    configuration lacks are dropped (docs/gc.md, Quotas, says why)."""
    try:
        created = await registry.quotas.set_up(drop_others=True)
    except Unavailable as exc:
        log.warning("quotas not set up yet: %s", exc.message)
        return
    if created:
        log.info("quota usage computed for %s", "; ".join(created))


async def run_maintenance(config: Config, stopped: asyncio.Event) -> None:
    """Garbage collection (and its sweep) until `stopped`: the work of the supervisor's
    maintenance process, which runs at a lower CPU priority than the workers serving
    requests, so that collecting never takes their CPU when they need it."""
    registry = build_registry(config)
    collector = GarbageCollector(registry.metadata, registry.blobs, config.gc)
    tasks = [
        asyncio.create_task(collector.run_periodically()),
        asyncio.create_task(collector.sweep_periodically()),
    ]
    await stopped.wait()
    await _cancel(tasks)
    await registry.blobs.close()
    await registry.metadata.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _expire_uploads(registry: Registry) -> None:
    while True:
        try:
            removed = await registry.uploads.expire(registry.config.upload_expiry_seconds)
            if removed:
                log.info("removed %d expired uploads", removed)
        except Unavailable as exc:
            log.warning("upload expiry skipped: %s", exc.message)
        except Exception:
            log.exception("upload expiry failed")
        await asyncio.sleep(UPLOAD_EXPIRY_INTERVAL)
