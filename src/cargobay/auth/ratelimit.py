"""Throttling, answered with 429 TOOMANYREQUESTS and Retry-After.

FailedLogins: too many failures from one client address or for one user name within a window,
and further attempts are refused until the window has passed. RequestRate: optional request
limits per client address and per user (token buckets).

The counts live in each worker process (with N workers a client gets up to N times the limit);
a shared store for scale-out belongs with the other shared state.
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


class RequestRate:
    """Token buckets: `rate` requests per second per key, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float | None:
        """Spend one request for `key`: None if allowed, else seconds until one is."""
        now = time.monotonic()
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._forget_full(now)
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        return None

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
