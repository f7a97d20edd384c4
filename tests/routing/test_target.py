"""TargetState: counters, latency average, and the two signals that gate it."""

from __future__ import annotations

from routing_support import MakeTarget

from aifabric.core import BackendState, FailureClass


def test_outstanding_and_ewma(make_target: MakeTarget) -> None:
    t = make_target("a")
    first = t.on_start(0.0)
    second = t.on_start(0.0)
    assert t.outstanding == 2
    first.success(1.0, 1.0)
    assert t.ewma_latency == 1.0
    second.success(2.0, 2.0)
    assert abs(t.ewma_latency - 1.3) < 1e-9
    assert t.outstanding == 0


def test_an_attempt_settles_exactly_once_whoever_calls(make_target: MakeTarget) -> None:
    """The forwarder and the stream relay may both try to end one attempt: only the first counts."""
    t = make_target("a")
    other = t.on_start(0.0)
    guard = t.on_start(0.0)
    guard.success(1.0, 1.0)
    guard.abandon()
    assert guard.failure(FailureClass.UPSTREAM_5XX, 2.0) is False
    guard.success(5.0, 3.0)
    assert (t.outstanding, t.successes, t.failures, t.ewma_latency) == (1, 1, 0, 1.0)
    assert t.available(3.0)
    other.abandon()
    assert t.outstanding == 0


def test_available_needs_both_health_and_detector(make_target: MakeTarget) -> None:
    t = make_target("a")
    assert t.available(0.0)
    t.health.state = BackendState.DOWN
    assert not t.available(0.0)
    t.health.state = BackendState.UP
    assert t.on_start(0.0).failure(FailureClass.UPSTREAM_5XX, 0.0) is True
    assert not t.available(1.0)
    assert t.available(10.0)


def test_targets_on_one_backend_share_its_health(make_target: MakeTarget) -> None:
    a = make_target("gpu", role="chat-fast")
    b = make_target("gpu", role="chat-deep")
    a.health.state = BackendState.ASLEEP
    assert not b.available(0.0)


def test_client_errors_do_not_eject(make_target: MakeTarget) -> None:
    t = make_target("a")
    for _ in range(5):
        assert t.on_start(0.0).failure(FailureClass.CLIENT_ERROR, 0.0) is False
    assert t.available(0.0)


def test_abandoned_trial_frees_half_open(make_target: MakeTarget) -> None:
    t = make_target("a")
    t.on_start(0.0).failure(FailureClass.CONNECT, 0.0)
    assert t.available(10.0)
    trial = t.on_start(10.0)
    assert not t.available(10.0)
    trial.abandon()
    assert t.available(10.0)
    assert t.name == "chat-fast/a/m"
