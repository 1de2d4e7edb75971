from __future__ import annotations

from unittest import mock

import pytest

from cargobay.auth.ratelimit import FailedLogins, RequestRate


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


def test_request_rate_allows_a_burst_then_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("cargobay.auth.ratelimit.time.monotonic", lambda: now[0])
    rate = RequestRate(rate=2, burst=3)
    assert [rate.take("a") for _ in range(3)] == [None, None, None]
    wait = rate.take("a")
    assert wait is not None and 0 < wait <= 0.5
    assert rate.take("b") is None  # keys are independent
    now[0] += 0.5  # one token back at 2 per second
    assert rate.take("a") is None
    assert rate.take("a") is not None
    now[0] += 10  # refilled to the burst, not beyond
    assert [rate.take("a") for _ in range(4)] == [None, None, None, pytest.approx(0.5)]
