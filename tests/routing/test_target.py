"""TargetState: counters, latency average, and the two signals that gate it."""

from __future__ import annotations

from routing_support import MakeTarget

from aifabric.core import BackendState, FailureClass


def test_outstanding_and_ewma(make_target: MakeTarget) -> None:
    t = make_target("a")
    t.on_start(0.0)
    t.on_start(0.0)
    assert t.outstanding == 2
    t.on_success(1.0, 1.0)
    assert t.ewma_latency == 1.0
    t.on_success(2.0, 2.0)
    assert abs(t.ewma_latency - 1.3) < 1e-9
    assert t.outstanding == 0
    t.on_success(1.0, 3.0)
    assert t.outstanding == 0, "never negative"


def test_available_needs_both_health_and_detector(make_target: MakeTarget) -> None:
    t = make_target("a")
    assert t.available(0.0)
    t.health.state = BackendState.DOWN
    assert not t.available(0.0)
    t.health.state = BackendState.UP
    t.on_start(0.0)
    assert t.on_failure(FailureClass.UPSTREAM_5XX, 0.0) is True
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
        t.on_start(0.0)
        assert t.on_failure(FailureClass.CLIENT_ERROR, 0.0) is False
    assert t.available(0.0)


def test_abandoned_trial_frees_half_open(make_target: MakeTarget) -> None:
    t = make_target("a")
    t.on_failure(FailureClass.CONNECT, 0.0)
    assert t.available(10.0)
    t.on_start()
    assert not t.available(10.0)
    t.on_abandon()
    assert t.available(10.0)
    assert t.name == "chat-fast/a/m"
