"""Passive ejection of one target, driven by a fake clock."""

from __future__ import annotations

import pytest

from aifabric.core import FailureClass
from aifabric.routing.outlier import OutlierDetector

F5 = FailureClass.UPSTREAM_5XX


def test_ejects_after_consecutive_failures_only() -> None:
    d = OutlierDetector(consecutive_failures=3, base_ejection=10.0)
    assert d.record_failure(F5, 0.0) is False
    assert d.record_failure(FailureClass.CONNECT, 1.0) is False
    assert d.available(1.0)
    assert d.record_failure(FailureClass.TIMEOUT, 2.0) is True
    assert d.state(2.0) == "ejected"
    assert not d.available(2.0)
    assert not d.available(11.9)


def test_a_success_in_between_resets_the_count() -> None:
    d = OutlierDetector(consecutive_failures=2)
    d.record_failure(F5, 0.0)
    d.record_success(1.0)
    assert d.record_failure(F5, 2.0) is False
    assert d.state(2.0) == "ok"


def test_client_errors_never_count() -> None:
    d = OutlierDetector(consecutive_failures=1)
    for t in range(10):
        assert d.record_failure(FailureClass.CLIENT_ERROR, float(t)) is False
    assert d.state(10.0) == "ok"


def test_half_open_allows_exactly_one_trial_until_it_reports() -> None:
    d = OutlierDetector(consecutive_failures=1, base_ejection=10.0)
    d.record_failure(F5, 0.0)
    assert d.state(10.0) == "half_open"
    assert d.available(10.0)
    d.begin_attempt(10.0)
    assert not d.available(10.5), "a second request while the trial is in flight"
    d.record_success(11.0)
    assert d.state(11.0) == "ok"
    assert d.available(11.0)


def test_failed_trial_ejects_again_for_twice_as_long_up_to_the_cap() -> None:
    d = OutlierDetector(consecutive_failures=1, base_ejection=10.0, max_ejection=35.0)
    d.record_failure(F5, 0.0)
    assert d.ejected_until() == 10.0
    d.begin_attempt(10.0)
    assert d.record_failure(F5, 10.0) is True
    assert d.ejected_until() == 30.0  # 20 s
    d.begin_attempt(30.0)
    d.record_failure(F5, 30.0)
    assert d.ejected_until() == 65.0  # 40 s, capped at 35
    assert [d.ejection_time(n) for n in (1, 2, 3, 100)] == [10.0, 20.0, 35.0, 35.0]


def test_late_failures_of_requests_sent_before_the_ejection_do_not_extend_it() -> None:
    d = OutlierDetector(consecutive_failures=1, base_ejection=10.0)
    d.record_failure(F5, 0.0)
    assert d.record_failure(F5, 1.0) is False
    assert d.ejected_until() == 10.0


def test_success_streak_forgets_the_ejection_history() -> None:
    d = OutlierDetector(consecutive_failures=1, base_ejection=10.0, reset_after=3)
    d.record_failure(F5, 0.0)
    d.begin_attempt(10.0)
    d.record_failure(F5, 10.0)  # second ejection: 20 s
    d.begin_attempt(30.0)
    d.record_success(30.0)
    assert d.ejections == 2, "one success is not a streak"
    d.record_success(31.0)
    d.record_success(32.0)
    assert d.ejections == 0
    d.record_failure(F5, 40.0)
    assert d.ejected_until() == 50.0, "back to the base ejection time"


def test_abandoned_trial_frees_the_slot_and_a_lost_one_expires() -> None:
    d = OutlierDetector(consecutive_failures=1, base_ejection=10.0, trial_lease=60.0)
    d.record_failure(F5, 0.0)
    d.begin_attempt(10.0)
    d.abandon()
    assert d.available(10.0)
    d.begin_attempt(10.0)
    assert not d.available(69.0)
    assert d.available(70.0), "a trial that never reported back must not block the target forever"


# Every field an event changes (not `__slots__`: the class is compiled, aifabric.native, and a compiled
# class has none to list).
_STATE = ("_ejected_until", "_ejections", "_failures", "_streak", "_trial_started")


def test_asking_changes_nothing() -> None:
    """state() and available() are queries: asking at a late time neither starts a trial nor moves a
    clock that a later event would read."""
    d = OutlierDetector(consecutive_failures=1, base_ejection=10.0)
    d.record_failure(F5, 0.0)
    before = {name: getattr(d, name) for name in _STATE}
    assert (d.state(12.0), d.available(12.0), d.state(5.0)) == ("half_open", True, "ejected")
    assert {name: getattr(d, name) for name in _STATE} == before
    d.begin_attempt(12.0)
    assert not d.available(12.0)


def test_single_target_role_recovers_through_a_panic_request() -> None:
    # The planner sends to an ejected sole target when nothing else is left; its success ends it.
    d = OutlierDetector(consecutive_failures=1, base_ejection=100.0)
    d.record_failure(F5, 0.0)
    d.begin_attempt(5.0)
    d.record_success(6.0)
    assert d.state(6.0) == "ok"


def test_rejects_a_zero_threshold() -> None:
    with pytest.raises(ValueError):
        OutlierDetector(consecutive_failures=0)
