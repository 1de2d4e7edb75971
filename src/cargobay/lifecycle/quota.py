"""Quotas (`quotas`): limits on the bytes and tags of the repositories a glob list matches.

One quota covers every repository that matches it, counted together; a repository may fall
under several, and each is checked. Stored bytes count each blob once per quota however many
of its repositories link it. A blob is charged when a manifest that references it is pushed
into one of the quota's repositories (the check refuses the push with 403 DENIED if that, or
its new tags, would take the quota over a limit) and stays charged until the last link to it
in the quota's repositories goes: deleting images frees their bytes once garbage collection
removes the links. The metadata store keeps the usage exactly, under concurrent pushes on any
number of instances (metadata/postgres_quota.py explains how, docs/gc.md what it costs).

A quota already full refuses the start of an upload, and a mount, into its repositories at
once, before any byte is sent (Harbor#17390). An upload started before it was full completes
(the spec expects blobs before their manifest), so the bytes stored may exceed the limit by
the uploads in flight when it filled, one blob each; the manifest that would reference them
is refused, they are charged to nothing, and garbage collection removes them after its delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from cargobay import metrics
from cargobay.auth.policy import repository_matches
from cargobay.config import QuotaConfig, parse_size
from cargobay.errors import Denied, Unavailable
from cargobay.metadata.base import MetadataStore, QuotaCheck, QuotaExceeded, QuotaUsage

log = logging.getLogger("cargobay")

USAGE_REFRESH_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Quota:
    repositories: tuple[str, ...]
    max_bytes: int | None
    max_tags: int | None

    @property
    def key(self) -> str:
        """Its name in the metadata store, messages and metrics: its globs as configured.
        Changing them makes a new quota (its usage computed afresh); changing only the
        limits keeps the usage."""
        return ", ".join(self.repositories)

    def covers(self, repository: str) -> bool:
        return repository_matches(repository, self.repositories)

    def check(self) -> QuotaCheck:
        return QuotaCheck(self.key, self.max_bytes, self.max_tags)


@dataclass(frozen=True, slots=True)
class QuotaReport:
    quota: Quota
    usage: QuotaUsage
    set_up: bool = True  # False: the metadata does not know it yet (usage zero)


class Quotas:
    def __init__(self, metadata: MetadataStore, quotas: Sequence[Quota] = ()) -> None:
        self.metadata = metadata
        self.quotas = tuple(quotas)

    @classmethod
    def from_config(cls, metadata: MetadataStore, configs: Sequence[QuotaConfig]) -> Quotas:
        """Quotas from checked settings (load_config refuses invalid sizes)."""
        return cls(
            metadata,
            [
                Quota(
                    tuple(config.repositories),
                    None if config.max_bytes is None else parse_size(config.max_bytes),
                    config.max_tags,
                )
                for config in configs
            ],
        )

    def covering(self, repository: str) -> list[Quota]:
        return [quota for quota in self.quotas if quota.covers(repository)]

    def checks(self, repository: str) -> list[QuotaCheck]:
        """What put_manifest enforces for a push into the repository (quotas with the same
        globs share their usage, so each key is checked against the lowest limits)."""
        by_key: dict[str, QuotaCheck] = {}
        for quota in self.covering(repository):
            seen = by_key.get(quota.key)
            by_key[quota.key] = (
                quota.check()
                if seen is None
                else QuotaCheck(
                    quota.key,
                    _lowest(seen.max_bytes, quota.max_bytes),
                    _lowest(seen.max_tags, quota.max_tags),
                )
            )
        return list(by_key.values())

    async def set_up(self, *, drop_others: bool = False) -> list[str]:
        """Set up those of these quotas the metadata store does not know (their usage computed
        from the links); the keys that were set up. With `drop_others` (only a registry
        instance starting: docs/gc.md, Quotas), the quotas not configured here are dropped."""
        covers = {quota.key: quota.covers for quota in self.quotas}
        return await self.metadata.set_up_quotas(covers, drop_others=drop_others)

    async def refuse_if_full(self, repository: str) -> None:
        """Denied if a quota of the repository has no bytes left: an upload or a mount into
        it is refused before any byte is sent."""
        limited = [q for q in self.covering(repository) if q.max_bytes is not None]
        if not limited:
            return
        usage = {u.key: u for u in await self.metadata.quota_usage([q.key for q in limited])}
        for quota in limited:
            found = usage.get(quota.key)
            assert quota.max_bytes is not None
            if found is not None and found.bytes >= quota.max_bytes:
                raise refusal(QuotaExceeded(quota.key, "storage", found.bytes, quota.max_bytes))

    async def report(self) -> list[QuotaReport]:
        """Every quota with its usage (zero for one not set up yet)."""
        found = {u.key: u for u in await self.metadata.quota_usage([q.key for q in self.quotas])}
        return [
            QuotaReport(quota, found[quota.key])
            if quota.key in found
            else QuotaReport(quota, QuotaUsage(quota.key, 0, 0, 0), set_up=False)
            for quota in self.quotas
        ]

    async def export_periodically(self) -> None:
        """Keep the quota metrics current (run by one worker, like metrics.refresh_totals)."""
        while True:
            try:
                metrics.quota_usage(await self.report())
            except Unavailable as exc:
                log.warning("quota metrics not refreshed: %s", exc.message)
            except Exception:
                log.exception("quota metrics not refreshed")
            await asyncio.sleep(USAGE_REFRESH_SECONDS)


def quota_table(reports: Sequence[QuotaReport]) -> Table:
    """For `cargobay quota`: each quota's globs, bytes and tags used of their limits, and how
    many repositories it counts."""
    table = Table(title="quotas")
    table.add_column("quota")
    table.add_column("storage used", justify="right")
    table.add_column("of", justify="right")
    table.add_column("%", justify="right")
    table.add_column("tags used", justify="right")
    table.add_column("of", justify="right")
    table.add_column("repositories", justify="right")
    for report in reports:
        quota, usage = report.quota, report.usage
        if not report.set_up:
            table.add_row(
                quota.key,
                "not set up",
                "unlimited" if quota.max_bytes is None else format_size(quota.max_bytes),
                "",
                "",
                "unlimited" if quota.max_tags is None else f"{quota.max_tags:,}",
                "",
            )
            continue
        table.add_row(
            quota.key,
            format_size(usage.bytes),
            "unlimited" if quota.max_bytes is None else format_size(quota.max_bytes),
            _percent(usage.bytes, quota.max_bytes),
            f"{usage.tags:,}",
            "unlimited" if quota.max_tags is None else f"{quota.max_tags:,}",
            f"{usage.repositories:,}",
        )
    return table


def _percent(used: int, limit: int | None) -> str:
    if limit is None:
        return ""
    return "full" if used >= limit else f"{100 * used / limit:.0f}%" if limit else ""


def refusal(exceeded: QuotaExceeded) -> Denied:
    """quota exceeded: storage, 10.2 GiB of 10 GiB (quota team-a/*)"""
    if exceeded.what == "storage":
        used, limit = format_size(exceeded.used), format_size(exceeded.limit)
        if used == limit and exceeded.used != exceeded.limit:  # rounded alike: be exact
            used, limit = f"{exceeded.used:,} bytes", f"{exceeded.limit:,} bytes"
    else:
        used, limit = f"{exceeded.used:,}", f"{exceeded.limit:,}"
    return Denied(
        f"quota exceeded: {exceeded.what}, {used} of {limit} (quota {exceeded.key})",
        detail={
            "quota": exceeded.key,
            "what": exceeded.what,
            "used": exceeded.used,
            "limit": exceeded.limit,
        },
    )


def format_size(size: int) -> str:
    """In binary units, to three significant digits: 512 B, 1.03 KiB, 10 GiB, 10.2 GiB."""
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024:
            break
        value /= 1024
        if abs(value) < 1024 or unit == "TiB":
            decimals = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{decimals}f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} B"


def _lowest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)
