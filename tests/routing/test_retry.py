"""Retry policy: backoff, deadline, Retry-After, what is retried."""

from __future__ import annotations

import email.utils
import random

import pytest

from aifabric.config.schema import RetryConfig
from aifabric.core import FailureClass
from aifabric.routing.retry import Deadline, backoff, parse_retry_after, retry_delay

CFG = RetryConfig(max_attempts=4, backoff_base=0.1, backoff_max=1.0, max_retry_after=10.0)


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0), (1000, 1.0)]:
        samples = [backoff(attempt, base=0.1, cap=1.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8, "jitter spans the whole range"
        assert min(samples) < ceiling * 0.2
    assert backoff(0, base=0.1, cap=1.0, rng=rng) == 0.0


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    a = [backoff(3, base=0.1, cap=1.0, rng=random.Random(1)) for _ in range(3)]
    b = [backoff(3, base=0.1, cap=1.0, rng=random.Random(1)) for _ in range(3)]
    assert a == b


def test_deadline() -> None:
    d = Deadline(start=100.0, budget=30.0)
    assert d.remaining(110.0) == 20.0
    assert not d.expired(129.9)
    assert d.expired(130.0)
    assert d.remaining(200.0) == 0.0
    assert d.try_timeout(110.0, per_try=5.0) == 5.0
    assert d.try_timeout(128.0, per_try=5.0) == 2.0


def test_client_errors_are_never_retried() -> None:
    assert retry_delay(FailureClass.CLIENT_ERROR, None, 1, CFG, random.Random(0)) is None


@pytest.mark.parametrize(
    "failure", [FailureClass.CONNECT, FailureClass.TIMEOUT, FailureClass.AUTH, FailureClass.MODEL_NOT_FOUND]
)
def test_failures_about_one_backend_move_on_at_once(failure: FailureClass) -> None:
    assert retry_delay(failure, None, 1, CFG, random.Random(0)) == 0.0


def test_loading_and_5xx_back_off_on_the_same_backend_but_not_on_another() -> None:
    rng = random.Random(3)
    for failure in (FailureClass.LOADING, FailureClass.UPSTREAM_5XX):
        delay = retry_delay(failure, None, 2, CFG, rng)
        assert delay is not None and 0.0 <= delay <= 0.2
        assert retry_delay(failure, None, 2, CFG, rng, same_backend=False) == 0.0


def test_overloaded_respects_retry_after_capped() -> None:
    rng = random.Random(0)
    assert retry_delay(FailureClass.OVERLOADED, 3.0, 1, CFG, rng) == 3.0
    assert retry_delay(FailureClass.OVERLOADED, 120.0, 1, CFG, rng) is None  # the client gets the 429
    assert retry_delay(FailureClass.OVERLOADED, 120.0, 1, CFG, rng, same_backend=False) == 0.0
    no_header = retry_delay(FailureClass.OVERLOADED, None, 1, CFG, rng)
    assert no_header is not None and no_header <= 0.1


def test_no_retry_once_attempts_are_used_up() -> None:
    assert retry_delay(FailureClass.CONNECT, None, 3, CFG, random.Random(0)) == 0.0
    assert retry_delay(FailureClass.CONNECT, None, 4, CFG, random.Random(0)) is None


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now) is None
