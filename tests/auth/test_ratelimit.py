from __future__ import annotations

from unittest import mock

from cargobay.auth.ratelimit import FailedLogins


def test_blocks_after_the_limit_until_the_window_passes() -> None:
    clock = [1000.0]
    with mock.patch("cargobay.auth.ratelimit.time.monotonic", lambda: clock[0]):
        logins = FailedLogins(limit=3, window=60.0)
        for _ in range(2):
            logins.record("client:a", "user:x")
        assert logins.retry_after("client:a", "user:x") is None
        logins.record("client:a", "user:x")
        assert logins.retry_after("client:a") == 60.0
        assert logins.retry_after("user:x") == 60.0  # per user too, from any address
        assert logins.retry_after("client:b", "user:y") is None
        clock[0] += 30
        assert logins.retry_after("client:a") == 30.0
        clock[0] += 31
        assert logins.retry_after("client:a", "user:x") is None
