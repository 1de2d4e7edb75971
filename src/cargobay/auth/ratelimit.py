"""Failed-login throttling: too many failures from one client address or for one user name
within a window, and further attempts are refused with 429 until the window has passed.

The counts live in each worker process (with N workers an attacker gets up to N times the
limit); a shared store for scale-out belongs with the other shared state.
"""

from __future__ import annotations

import time
from collections import deque

MAX_KEYS = 10_000


class FailedLogins:
    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, *keys: str) -> float | None:
        """Seconds until another attempt is allowed, or None if one is allowed now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            failures = self._failures.get(key)
            if failures is None:
                continue
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                wait = max(wait, failures[0] + self.window - now)
        return wait or None

    def record(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= MAX_KEYS:
            self._forget_older_than(now - self.window)
        for key in keys:
            self._failures.setdefault(key, deque(maxlen=self.limit)).append(now)

    def _forget_older_than(self, cutoff: float) -> None:
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= cutoff]:
            del self._failures[key]
