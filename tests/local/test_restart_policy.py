"""The restart backoff policy, as numbers: no processes, no sleeping."""

from __future__ import annotations

from aifabric.local.restart import RestartPolicy


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RestartPolicy(base=1.0, factor=2.0, max_delay=30.0)
    assert [policy.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_quick_crashes_back_off_further_and_further() -> None:
    policy = RestartPolicy(base=1.0, stable_after=60.0)
    failures, delays = 0, []
    for _ in range(4):
        decision = policy.on_exit(previous_failures=failures, uptime=5.0, ever_ready=True)
        assert decision.restart
        failures = decision.failures
        delays.append(decision.delay)
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_a_backend_that_ran_long_enough_starts_the_count_over() -> None:
    policy = RestartPolicy(base=1.0, stable_after=60.0)
    decision = policy.on_exit(previous_failures=5, uptime=3600.0, ever_ready=True)
    assert (decision.restart, decision.failures, decision.delay) == (True, 1, 1.0)


def test_a_backend_that_was_never_ready_is_given_up_on_after_max_start_failures() -> None:
    policy = RestartPolicy(max_start_failures=3)
    first = policy.on_exit(previous_failures=0, uptime=0.5, ever_ready=False)
    second = policy.on_exit(previous_failures=first.failures, uptime=0.5, ever_ready=False)
    third = policy.on_exit(previous_failures=second.failures, uptime=0.5, ever_ready=False)
    assert (first.restart, second.restart, third.restart) == (True, True, False)
    assert third.failures == 3


def test_a_backend_that_once_served_is_always_restarted() -> None:
    policy = RestartPolicy(max_start_failures=3, max_delay=30.0)
    decision = policy.on_exit(previous_failures=50, uptime=1.0, ever_ready=True)
    assert decision.restart and decision.delay == 30.0
