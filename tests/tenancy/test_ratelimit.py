"""The sliding-window limiter and admission, with the clock passed in: no sockets, no sleeps."""

from __future__ import annotations

import pytest

from aifabric.config.schema import RoleLimits
from aifabric.errors import RateLimited
from aifabric.tenancy.admission import Admission, estimate_tokens
from aifabric.tenancy.principal import Principal
from aifabric.tenancy.ratelimit import SlidingWindow, anthropic_headers, format_reset, parse_reset

T0 = 1_800_000_000.0 - (1_800_000_000.0 % 60)  # the start of a minute
NO_ROLE_LIMITS = RoleLimits()


def test_the_limit_holds_within_a_minute_and_says_when_to_come_back() -> None:
    window = SlidingWindow(3)
    assert [window.try_take(T0 + i).allowed for i in range(4)] == [True, True, True, False]
    refused = window.try_take(T0 + 10)
    assert not refused.allowed and refused.remaining == 0 and refused.limit == 3
    # Nothing more fits in this window; in the next, the 3 counted fade out over the minute: one
    # request fits once 3 * (1 - e/60) <= 2, at e = 20 s into the next window.
    assert refused.retry_after == pytest.approx(60 - 10 + 20)
    assert not window.try_take(T0 + 60 + 19.9).allowed
    assert window.try_take(T0 + 60 + 20.1).allowed


def test_no_burst_of_twice_the_limit_across_a_minute_boundary() -> None:
    window = SlidingWindow(10)
    taken = sum(window.try_take(T0 + 59.9).allowed for _ in range(10))
    taken += sum(window.try_take(T0 + 60.1).allowed for _ in range(10))
    assert taken == 10  # a fixed window would let 20 through


def test_an_idle_minute_resets_the_window_and_reset_says_when() -> None:
    window = SlidingWindow(2)
    first = window.try_take(T0 + 30)
    assert first.remaining == 1 and first.reset == pytest.approx(90.0)
    assert window.try_take(T0 + 30).allowed
    assert window.used(T0 + 200) == 0
    assert window.try_take(T0 + 200).remaining == 1


def test_other_replicas_counts_and_a_local_share() -> None:
    window = SlidingWindow(10)
    window.try_take(T0 + 1)
    window.shared_cur = 8.0  # what the others counted this minute
    assert window.try_take(T0 + 2).allowed
    assert not window.try_take(T0 + 3).allowed
    alone = SlidingWindow(10)
    # Without the others' counts, each of two replicas may use half.
    assert [alone.try_take(T0 + 1, limit=5).allowed for _ in range(6)] == [True] * 5 + [False]


def test_tokens_are_estimated_then_corrected() -> None:
    window = SlidingWindow(100)
    assert window.try_take(T0, 80).allowed
    window.adjust(T0, -60)  # the backend said 20
    assert window.try_take(T0 + 1, 70).allowed
    # One request bigger than the whole limit goes when the window is empty, not never.
    big = SlidingWindow(50)
    assert big.try_take(T0, 500).allowed
    assert not big.try_take(T0 + 1, 1).allowed


def test_reset_reads_like_openais() -> None:
    assert format_reset(0.02) == "20ms"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(360) == "6m0s"
    # An admitted request's reset (60 to 120 s) comes from a table made once: the same text.
    assert [format_reset(s + 0.4) for s in (60, 61, 89, 119, 179)] == [
        "1m0s",
        "1m1s",
        "1m29s",
        "1m59s",
        "2m59s",
    ]
    assert format_reset(179.6) == "3m0s" and format_reset(59.96) == "60s"
    # A half second rounds up, from the table and beyond it alike (not to the even second).
    assert [format_reset(s) for s in (60.5, 61.5, 180.5, 181.5)] == ["1m1s", "1m2s", "3m1s", "3m2s"]


def test_a_reset_read_back_is_the_duration_written_to_the_millisecond() -> None:
    for seconds in (0.0, 0.02, 0.999, 1.5, 59.4, 60, 61.2, 119.6, 179.4, 360, 3725):
        text = format_reset(seconds)
        back = parse_reset(text)
        assert back is not None and abs(back - seconds) <= 0.5, (seconds, text, back)
    assert parse_reset("20ms") == 0.02 and parse_reset("6m0s") == 360.0
    for junk in ("", "soon", "5", "1h", "-1s"):
        assert parse_reset(junk) is None, junk


def test_anthropics_route_gets_anthropics_names_and_absolute_reset_times() -> None:
    now = 1_767_225_600.25  # 2026-01-01T00:00:00.25Z
    admission = Admission(wall=lambda: now)
    ticket = admission.admit(Principal("agent", rpm=5, tpm=1000), "chat", NO_ROLE_LIMITS, {"max_tokens": 10})
    assert ticket is not None
    got = dict(anthropic_headers([("content-type", "application/json"), *ticket.headers], now))
    assert got == {
        "anthropic-ratelimit-requests-limit": "5",
        "anthropic-ratelimit-requests-remaining": "4",
        # The window holds this request until the end of the next minute: 119.75 s from now.
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:02:00Z",
        "anthropic-ratelimit-tokens-limit": "1000",
        "anthropic-ratelimit-tokens-remaining": "989",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T00:02:00Z",
    }
    assert anthropic_headers([("x-ratelimit-reset-requests", "whenever")], now) == []


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_admission_refuses_over_the_key_rpm_with_openais_headers() -> None:
    clock = Clock()
    admission = Admission(wall=clock)
    key = Principal("app", rpm=2)
    tickets = [admission.admit(key, "chat", NO_ROLE_LIMITS, {}) for _ in range(2)]
    assert tickets[0] is not None
    assert dict(tickets[0].headers)["x-ratelimit-remaining-requests"] == "1"
    with pytest.raises(RateLimited) as refused:
        admission.admit(key, "chat", NO_ROLE_LIMITS, {})
    error = refused.value
    assert error.status == 429 and error.type == "requests" and error.code == "rate_limit_exceeded"
    assert error.headers["x-ratelimit-limit-requests"] == "2"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(error.headers["retry-after"]) >= 1
    assert "app" in error.message
    assert admission.admit(Principal("other", rpm=2), "chat", NO_ROLE_LIMITS, {}) is not None


def test_headers_name_the_tightest_limit_and_a_new_limit_applies_at_once() -> None:
    clock = Clock()
    admission = Admission(wall=clock)
    roomy = RoleLimits(rpm=100, tpm=10_000)
    ticket = admission.admit(Principal("app", rpm=3), "chat", roomy, {"max_tokens": 9})
    assert ticket is not None
    headers = dict(ticket.headers)
    # Requests: the key's 3 is tighter than the role's 100; tokens: only the role has a limit.
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert headers["x-ratelimit-remaining-tokens"] == str(10_000 - 10)
    assert headers["x-ratelimit-reset-requests"] == "2m0s"  # counted at the minute's start: gone in 2
    clock.now += 30
    later = admission.admit(Principal("app", rpm=3), "chat", roomy, {})
    assert later is not None and dict(later.headers)["x-ratelimit-reset-requests"] == "1m30s"
    # The operator lowers the key's limit (keys update): the same counts, the new limit, no restart.
    with pytest.raises(RateLimited) as refused:
        admission.admit(Principal("app", rpm=2), "chat", roomy, {})
    assert refused.value.headers["x-ratelimit-limit-requests"] == "2"
    assert admission.admit(Principal("app", rpm=5), "chat", roomy, {}) is not None
    # And back to 3 (a plan made before): the headers say 3 again, and 3 are counted already.
    with pytest.raises(RateLimited) as again:
        admission.admit(Principal("app", rpm=3), "chat", roomy, {})
    assert again.value.headers["x-ratelimit-limit-requests"] == "3"


def test_a_refused_request_counts_against_nothing() -> None:
    admission = Admission(wall=Clock())
    key = Principal("app", rpm=5, tpm=100)
    big = {"messages": [{"role": "user", "content": "x" * 4000}]}  # ~1000 tokens
    assert admission.admit(key, "chat", NO_ROLE_LIMITS, big) is not None  # alone: fits an empty window
    with pytest.raises(RateLimited) as tokens:
        admission.admit(key, "chat", NO_ROLE_LIMITS, {"max_tokens": 5})
    assert tokens.value.type == "tokens"
    assert admission.windows[("key", "app", "requests")].mine_cur == 1


def test_role_limits_hold_for_every_key_together() -> None:
    admission = Admission(wall=Clock())
    limits = RoleLimits(rpm=2)
    assert admission.admit(Principal("a"), "chat-deep", limits, {}) is not None
    assert admission.admit(Principal("b"), "chat-deep", limits, {}) is not None
    with pytest.raises(RateLimited, match="role 'chat-deep'"):
        admission.admit(Principal("c"), "chat-deep", limits, {})
    assert admission.admit(Principal("c"), "chat-fast", NO_ROLE_LIMITS, {}) is None, "no limit: no cost"


def test_concurrency_is_given_back_when_a_request_ends() -> None:
    admission = Admission(wall=Clock())
    key = Principal("app", concurrency=1)
    first = admission.admit(key, "chat", NO_ROLE_LIMITS, {})
    assert first is not None
    with pytest.raises(RateLimited) as busy:
        admission.admit(key, "chat", NO_ROLE_LIMITS, {})
    assert busy.value.code == "concurrency_limit_exceeded"
    first.release()
    first.release()  # idempotent: a stream's end and its aclose both release
    second = admission.admit(key, "chat", NO_ROLE_LIMITS, {})
    assert second is not None and admission.in_flight == {"app": 1}


def test_token_estimate() -> None:
    payload = {"messages": [{"role": "user", "content": "a" * 40}], "max_tokens": 10}
    assert estimate_tokens(payload) == (40 + 4) // 4 + 10
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "b" * 80}]}]}
    assert estimate_tokens(parts) == 21
    assert estimate_tokens({"input": ["c" * 8, "d" * 8]}) == 4
