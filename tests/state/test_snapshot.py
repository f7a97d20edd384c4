"""Health records across processes with different clocks; an ejection taken on from elsewhere."""

from __future__ import annotations

import pytest

from aifabric.core import BackendHealth, BackendState, FailureClass, Transition
from aifabric.routing.outlier import OutlierDetector
from aifabric.state.snapshot import apply_health_record, health_record


def probed_health() -> BackendHealth:
    return BackendHealth(
        "armitage-vllm",
        state=BackendState.DOWN,
        reason="connection refused",
        since=990.0,
        last_probe_at=995.0,
        last_probe_latency=0.012,
        served_models=("Qwen2.5-7B-Instruct-AWQ",),
        mismatches=["model id drift"],
        load={"requests_waiting": 3.0},
        failure=FailureClass.CONNECT,
        consecutive_failed=4,
    )


def test_a_record_means_the_same_on_another_clock() -> None:
    leader = probed_health()
    record = health_record(leader, now=1000.0, wall=1_700_000_000.0)
    follower = BackendHealth("armitage-vllm", unhealthy_threshold=7)

    # The follower's monotonic clock reads 20.0 at the same wall-clock instant.
    transition = apply_health_record(follower, record, now=20.0, wall=1_700_000_000.0)

    expected = Transition("armitage-vllm", BackendState.UNKNOWN, BackendState.DOWN, "connection refused")
    assert transition == expected
    assert follower.snapshot(20.0) == leader.snapshot(1000.0), "down for 10 s, probed 5 s ago, on both"
    assert (follower.since, follower.last_probe_at) == (10.0, 15.0)
    assert follower.consecutive_failed == 4
    assert follower.unhealthy_threshold == 7, "thresholds come from each gateway's own config"


def test_no_transition_when_the_state_stays_and_the_model_list_is_kept() -> None:
    follower = BackendHealth("b")
    record = health_record(probed_health(), now=1000.0, wall=5000.0)
    apply_health_record(follower, record, now=1.0, wall=5000.0)
    models = follower.served_models
    assert apply_health_record(follower, record, now=2.0, wall=5001.0) is None
    assert follower.served_models is models, "targets recompute their model check only on a new list"


def test_an_unreadable_record_changes_nothing() -> None:
    follower = probed_health()
    before = follower.snapshot(1000.0)
    record = health_record(BackendHealth("b", state=BackendState.UP), now=1.0, wall=2.0)
    record["failure"] = "not-a-failure-class"
    with pytest.raises(ValueError, match="unreadable health record"):
        apply_health_record(follower, record, now=1000.0, wall=2.0)
    assert follower.snapshot(1000.0) == before
    with pytest.raises(ValueError):
        apply_health_record(follower, {"reason": "no state"}, now=1000.0, wall=2.0)


def test_an_adopted_ejection_holds_until_its_end_then_half_opens() -> None:
    detector = OutlierDetector(consecutive_failures=3, base_ejection=10.0)
    assert detector.adopt_ejection(until=150.0, count=2)
    assert detector.state(100.0) == "ejected" and not detector.available(149.9)
    assert detector.ejections == 2
    assert detector.state(150.0) == "half_open" and detector.available(150.0)

    detector.begin_attempt(150.0)
    assert detector.record_failure(FailureClass.UPSTREAM_5XX, 151.0), "the trial failed: ejected again"
    assert detector.ejected_until() == 151.0 + 40.0, "the third ejection in a row lasts 4x the base"


def test_a_shorter_ejection_from_elsewhere_is_ignored() -> None:
    detector = OutlierDetector(consecutive_failures=1, base_ejection=60.0)
    assert detector.record_failure(FailureClass.TIMEOUT, 0.0)
    assert not detector.adopt_ejection(until=30.0, count=1)
    assert detector.ejected_until() == 60.0
    assert detector.adopt_ejection(until=90.0, count=1)
    assert detector.ejected_until() == 90.0
