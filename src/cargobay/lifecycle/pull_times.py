"""Last pull time of each manifest, for retention policies (`keep_tags.pulled_within`), with no
write on the request path.

A manifest GET only notes (repository, digest, now) in a dict of this process; a background
task writes what was noted in one batched statement every FLUSH_SECONDS (sooner when
MAX_PENDING manifests wait), and once more when the process stops. A pull therefore costs a
dict assignment; the database sees at most one write per process per FLUSH_SECONDS, each
updating only manifests whose recorded time is older than PULL_TIME_PRECISION. A crash loses
at most the last FLUSH_SECONDS of pull times, which only makes a policy see a pull as older.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from cargobay.errors import Unavailable
from cargobay.metadata.base import MetadataStore, Pull

log = logging.getLogger("cargobay")

FLUSH_SECONDS = 5.0
MAX_PENDING = 10_000  # manifests noted before a flush is started early


class PullTimes:
    def __init__(self, metadata: MetadataStore, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.metadata = metadata
        self.flush_seconds = flush_seconds
        self._pending: dict[tuple[str, str], float] = {}
        self._full = asyncio.Event()

    def note(self, repository: str, digest: str) -> None:
        """A GET of the manifest, now (called on the request path: memory only)."""
        self._pending[(repository, digest)] = time.time()
        if len(self._pending) >= MAX_PENDING:
            self._full.set()

    async def flush(self) -> int:
        """Write what was noted; how many manifests. What fails to be written is noted again."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        pulls = [
            Pull(repository, digest, at) for (repository, digest), at in sorted(pending.items())
        ]
        try:
            await self.metadata.record_pulls(pulls)
        except BaseException:
            for key, at in pending.items():
                self._pending.setdefault(key, at)  # a newer note of the same manifest wins
            raise
        return len(pulls)

    async def run(self) -> None:
        """Flush every flush_seconds until cancelled; then the caller flushes once more."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_seconds)
            self._full.clear()
            try:
                await self.flush()
            except Unavailable as exc:
                log.warning("pull times not recorded yet: %s", exc.message)
            except Exception:
                log.exception("recording pull times failed")
