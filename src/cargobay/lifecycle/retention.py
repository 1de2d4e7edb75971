"""Retention policies: delete the tags and untagged manifests a policy says to (`retention`).

A policy applies to every repository matching one of its globs; of several policies, the first
that matches a repository is the one applied to it (put narrower globs first; a policy with
neither keep_tags nor delete_untagged_after exempts the repositories it matches).

- keep_tags: a tag is kept if it matches a pattern, is among the `most_recent` tags pushed
  last, was pushed within `pushed_within`, or its manifest was pulled within `pulled_within`;
  every other tag is deleted (its manifest stays, untagged). Immutable tags are never deleted.
  Without keep_tags no tag is deleted.
- delete_untagged_after: an untagged manifest pushed longer ago than this, and not pulled
  within it, is deleted, unless it is a child (at any depth) of an index that is kept, or a
  referrer whose subject is kept. Kept means tagged, or untagged and not deleted: an untagged
  index that goes takes its untagged children with it, in the same run, while a child that
  another kept index references stays.
- delete_referrers: the referrers of a manifest the policy deletes go with it (recursively),
  whatever their age, unless kept otherwise. Without it they are untagged manifests like any
  other once their subject is gone.

A run reads each repository in one snapshot, decides, then deletes one item at a time, each
with a check atomic with the delete (MetadataStore.delete_tag_if, delete_manifest_if_untagged):
a tag that a push moved meanwhile, and a manifest that was tagged, pushed again (which makes it
young) or referenced by a pushed index meanwhile, stay. Indexes go before their children and
subjects before their referrers, so that a child is never deleted while an index still
references it. Blob bytes are reclaimed later by garbage collection (lifecycle.gc), after its
grace delay.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from cargobay import metrics
from cargobay.auth.policy import repository_matches
from cargobay.config import RetentionConfig, RetentionPolicyConfig, parse_duration
from cargobay.errors import Unavailable
from cargobay.lifecycle.immutable import ImmutableTags
from cargobay.metadata.base import (
    ManifestState,
    MetadataStore,
    RepositoryState,
    TagState,
    UploadLocked,
)

log = logging.getLogger("cargobay")

# Held by the process applying the policies (an upload lock on an id no upload has; gc.py
# uses 1 and 2).
RETENTION_LOCK = str(uuid.UUID(int=3))
REPOSITORY_PAGE = 1000

# Told of every tag or manifest deleted: (repository, tag or digest).
DeletionListener = Callable[[str, str], Awaitable[None]]
Progress = Callable[[int], None]  # repositories looked at


@dataclass(frozen=True, slots=True)
class KeepTags:
    patterns: tuple[re.Pattern[str], ...] = ()
    most_recent: int | None = None
    pushed_within: float | None = None  # seconds
    pulled_within: float | None = None


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    repositories: tuple[str, ...]
    keep_tags: KeepTags | None = None
    delete_untagged_after: float | None = None  # seconds
    delete_referrers: bool = False

    @classmethod
    def from_config(cls, config: RetentionPolicyConfig) -> RetentionPolicy:
        """From checked settings (load_config refuses bad durations and expressions)."""
        keep = config.keep_tags
        return cls(
            tuple(config.repositories),
            None
            if keep is None
            else KeepTags(
                tuple(re.compile(p) for p in keep.patterns),
                keep.most_recent,
                _seconds(keep.pushed_within),
                _seconds(keep.pulled_within),
            ),
            _seconds(config.delete_untagged_after),
            config.delete_referrers,
        )


@dataclass(frozen=True, slots=True)
class Deletion:
    kind: str  # "tag" or "manifest"
    repository: str
    reference: str  # the tag, or the manifest's digest
    digest: str  # the manifest (a tag's: the one it points at)
    reason: str
    # A manifest deleted for its age: kept if pushed or pulled again at or after this.
    pushed_before: float | None = None
    # A tag: kept if pushed again since it was read (its push time changed).
    pushed_at: float | None = None

    def describe(self) -> str:
        separator = ":" if self.kind == "tag" else "@"
        return f"{self.kind} {self.repository}{separator}{self.reference}: {self.reason}"


@dataclass
class RetentionReport:
    dry_run: bool = False
    deleted: list[Deletion] = field(default_factory=list)  # dry run: that would be
    kept_by_pushes: list[Deletion] = field(default_factory=list)  # decided, then changed
    repositories: int = 0  # that a policy applies to
    seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for d in self.deleted if d.kind == kind)


class Retention:
    def __init__(
        self,
        metadata: MetadataStore,
        config: RetentionConfig,
        immutable: ImmutableTags | None = None,
        on_delete: DeletionListener | None = None,
    ) -> None:
        self.metadata = metadata
        self.config = config
        self.policies = [RetentionPolicy.from_config(p) for p in config.policies]
        self.immutable = immutable or ImmutableTags()
        self.on_delete = on_delete

    def policy_for(self, repository: str) -> RetentionPolicy | None:
        return next(
            (p for p in self.policies if repository_matches(repository, p.repositories)), None
        )

    async def run(
        self, *, dry_run: bool | None = None, progress: Progress | None = None
    ) -> RetentionReport | None:
        """Apply every policy once now; None if another process is applying them."""
        try:
            async with self.metadata.lock_upload(RETENTION_LOCK):
                return await self._run(
                    self.config.dry_run if dry_run is None else dry_run, progress
                )
        except UploadLocked:
            return None

    async def _run(self, dry_run: bool, progress: Progress | None) -> RetentionReport:
        started = time.monotonic()
        report = RetentionReport(dry_run=dry_run)
        last = None
        while names := await self.metadata.list_repositories(last, REPOSITORY_PAGE):
            last = names[-1]
            for repository in names:
                policy = self.policy_for(repository)
                if policy is None:
                    continue
                state = await self.metadata.repository_state(repository)
                plan = plan_repository(repository, policy, state, self.immutable, time.time())
                report.repositories += 1
                if dry_run:
                    report.deleted += plan
                else:
                    for deletion in plan:
                        await self._delete(deletion, report)
                if progress is not None:
                    progress(report.repositories)
        report.seconds = time.monotonic() - started
        return report

    async def _delete(self, deletion: Deletion, report: RetentionReport) -> None:
        if deletion.kind == "tag":
            done = await self.metadata.delete_tag_if(
                deletion.repository, deletion.reference, deletion.digest, deletion.pushed_at
            )
        else:
            done = await self.metadata.delete_manifest_if_untagged(
                deletion.repository, deletion.digest, deletion.pushed_before
            )
        if not done:
            report.kept_by_pushes.append(deletion)
            return
        report.deleted.append(deletion)
        log.debug("retention: deleted %s", deletion.describe())
        if self.on_delete is not None:
            try:
                await self.on_delete(deletion.repository, deletion.reference)
            except Unavailable as exc:
                log.warning("retention: no webhook event for %s: %s", deletion.describe(), exc)

    async def run_periodically(self) -> None:
        """Apply the policies every retention.interval_seconds (sooner again after a failure)."""
        pause = float(self.config.interval_seconds)
        while True:
            await asyncio.sleep(pause)
            pause = float(self.config.interval_seconds)
            try:
                report = await self.run()
                if report is not None:
                    log_report(report)
                    metrics.retention_run(report)
            except Unavailable as exc:
                log.warning("retention policies skipped: %s", exc.message)
                pause = min(pause, 60.0)
            except Exception:
                log.exception("retention policies failed")


def log_report(report: RetentionReport) -> None:
    if report.dry_run:
        for deletion in report.deleted:
            log.info("retention (dry run): would delete %s", deletion.describe())
    if report.deleted or report.kept_by_pushes:
        log.info(
            "retention%s: %d tags and %d manifests %s in %d repositories in %.1f s%s",
            " (dry run)" if report.dry_run else "",
            report.count("tag"),
            report.count("manifest"),
            "would be deleted" if report.dry_run else "deleted",
            report.repositories,
            report.seconds,
            f"; {len(report.kept_by_pushes)} kept by concurrent pushes"
            if report.kept_by_pushes
            else "",
        )


def plan_repository(
    repository: str,
    policy: RetentionPolicy,
    state: RepositoryState,
    immutable: ImmutableTags,
    now: float,
) -> list[Deletion]:
    """What the policy deletes from the repository, in the order to delete it: tags, then
    manifests, each index before its children and each subject before its referrers."""
    tags = _plan_tags(repository, policy, state, immutable, now)
    deleted_tags = {d.reference for d in tags}
    remaining = [t for t in state.tags if t.name not in deleted_tags]
    untagged_now = {d.digest for d in tags} - {t.digest for t in remaining}
    return tags + _plan_manifests(repository, policy, state, remaining, untagged_now, now)


def _plan_tags(
    repository: str,
    policy: RetentionPolicy,
    state: RepositoryState,
    immutable: ImmutableTags,
    now: float,
) -> list[Deletion]:
    keep = policy.keep_tags
    if keep is None:
        return []
    pulled = {m.digest: m.pulled_at for m in state.manifests}
    newest_first = sorted(state.tags, key=lambda t: (-t.pushed_at, t.name))
    recent = {t.name for t in newest_first[: keep.most_recent or 0]}
    deletions = []
    for tag in sorted(state.tags, key=lambda t: t.name):
        pulled_at = pulled.get(tag.digest)
        if (
            immutable.rule_for(repository, tag.name) is not None
            or any(pattern.search(tag.name) for pattern in keep.patterns)
            or tag.name in recent
            or (keep.pushed_within is not None and now - tag.pushed_at <= keep.pushed_within)
            or (
                keep.pulled_within is not None
                and pulled_at is not None
                and now - pulled_at <= keep.pulled_within
            )
        ):
            continue
        reasons = []
        if keep.most_recent:
            reasons.append(f"not among the {keep.most_recent} most recent")
        reasons.append(f"pushed {age(now - tag.pushed_at)} ago")
        if keep.pulled_within is not None:
            reasons.append(
                "never pulled" if pulled_at is None else f"last pulled {age(now - pulled_at)} ago"
            )
        if keep.patterns:
            reasons.append("no pattern matches")
        reason = ", ".join(reasons)
        deletions.append(
            Deletion("tag", repository, tag.name, tag.digest, reason, pushed_at=tag.pushed_at)
        )
    return deletions


def _plan_manifests(
    repository: str,
    policy: RetentionPolicy,
    state: RepositoryState,
    remaining_tags: Iterable[TagState],
    untagged_now: set[str],
    now: float,
) -> list[Deletion]:
    after = policy.delete_untagged_after
    if after is None:
        return []
    manifests = {m.digest: m for m in state.manifests}
    tagged = {t.digest for t in remaining_tags}
    children: dict[str, list[str]] = defaultdict(list)
    parents: dict[str, list[str]] = defaultdict(list)
    for parent, child in state.children:
        children[parent].append(child)
        parents[child].append(parent)
    referrers: dict[str, list[str]] = defaultdict(list)
    for m in manifests.values():
        if m.subject in manifests and m.subject != m.digest:
            referrers[m.subject].append(m.digest)
    cutoff = now - after

    def old(m: ManifestState) -> bool:
        return m.pushed_at < cutoff and (m.pulled_at is None or m.pulled_at < cutoff)

    def follows_subject(m: ManifestState) -> bool:
        return policy.delete_referrers and m.subject in manifests and m.subject != m.digest

    # Kept: tagged, untagged but young (a referrer that follows its subject is not kept by
    # its age), and whatever a kept manifest references as a child or has as a referrer.
    pending = [d for d, m in manifests.items() if d in tagged or not (old(m) or follows_subject(m))]
    kept: set[str] = set()
    while pending:
        digest = pending.pop()
        if digest not in kept:
            kept.add(digest)
            pending += children.get(digest, [])
            pending += referrers.get(digest, [])
    doomed = {d for d in manifests if d not in kept}

    # Parents and subjects first: a manifest waits for every doomed one that keeps it.
    blockers = {
        d: {p for p in parents.get(d, []) if p in doomed}
        | ({s} if (s := manifests[d].subject) in doomed and s != d else set())
        for d in doomed
    }
    ordered: list[str] = []
    ready = sorted((d for d in doomed if not blockers[d]), key=lambda d: _age_key(manifests[d]))
    while ready:
        digest = ready.pop(0)
        ordered.append(digest)
        for follower in [*children.get(digest, []), *referrers.get(digest, [])]:
            if follower in doomed and digest in blockers[follower]:
                blockers[follower].discard(digest)
                if not blockers[follower]:
                    ready.append(follower)
    deletions = []
    for digest in ordered:
        m = manifests[digest]
        if follows_subject(m) and m.subject in doomed and not old(m):
            reason = f"referrer of {m.subject}, which goes (delete_referrers)"
        else:
            reason = "untagged" + (" (its tags go now)" if digest in untagged_now else "")
            reason += f", pushed {age(now - m.pushed_at)} ago"
            if m.pulled_at is not None:
                reason += f", last pulled {age(now - m.pulled_at)} ago"
            reason += f" (delete_untagged_after {age(after)})"
        # A referrer that follows its subject goes whatever its age.
        pushed_before = None if follows_subject(m) else cutoff
        deletions.append(Deletion("manifest", repository, digest, digest, reason, pushed_before))
    return deletions


def _age_key(m: ManifestState) -> tuple[float, str]:
    return (m.pushed_at, m.digest)


def age(seconds: float) -> str:
    """A duration as people read it: 41d, 5h, 12m, 30s (rounded down)."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _seconds(duration: str | None) -> float | None:
    return None if duration is None else parse_duration(duration)
