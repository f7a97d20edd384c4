"""A local backend stopped on purpose (drill, operator): down at once, and it says why until restarted."""

from __future__ import annotations

from aifabric.core import BackendHealth, BackendState, FailureClass, ProbeResult, Transition

UP = ProbeResult(True, BackendState.UP, "serving", 0.01, ("m",))
REFUSED = ProbeResult(False, BackendState.DOWN, "not answering", 0.001, failure=FailureClass.CONNECT)
WHY = "stopped by a drill/operator"


def test_stopped_is_down_at_once_with_no_threshold_and_no_warm_up_hold() -> None:
    h = BackendHealth("b", unhealthy_threshold=3)
    h.apply_probe(UP, 1.0)
    h.mark_launching("restarting", 2.0)  # a restart was under way: stopping overrides it
    t = h.mark_stopped(WHY, 3.0)
    assert t == Transition("b", BackendState.LOADING, BackendState.DOWN, WHY)
    assert not h.routable and h.launching is None


def test_failed_probes_of_a_stopped_backend_keep_the_reason() -> None:
    h = BackendHealth("b")
    h.apply_probe(UP, 1.0)
    h.mark_stopped(WHY, 2.0)
    assert h.apply_probe(REFUSED, 3.0) is None
    assert (h.state, h.reason) == (BackendState.DOWN, WHY)


def test_starting_it_again_ends_the_stop_and_a_good_probe_brings_it_up() -> None:
    h = BackendHealth("b")
    h.mark_stopped(WHY, 1.0)
    h.mark_launching("starting (pid 9)", 2.0)
    assert h.stopped is None and h.state is BackendState.LOADING
    assert h.apply_probe(REFUSED, 3.0) is None  # refused while it loads: still loading, not down
    assert h.state is BackendState.LOADING
    t = h.apply_probe(UP, 4.0)
    assert t is not None and t.new is BackendState.UP


def test_a_probe_still_answered_after_the_stop_does_not_end_it() -> None:
    # The race of issue #8: a server finishing its last requests (or a probe sent just before the stop)
    # still answers; then it exits and probes are refused. The operator's stop must stand throughout.
    h = BackendHealth("b")
    h.apply_probe(UP, 1.0)
    h.mark_stopped(WHY, 2.0)
    assert h.apply_probe(UP, 2.1) is None
    assert (h.state, h.reason, h.stopped) == (BackendState.DOWN, WHY, WHY)
    for t in (3.0, 4.0, 5.0):
        assert h.apply_probe(REFUSED, t) is None
    assert (h.state, h.reason) == (BackendState.DOWN, WHY)
    assert h.last_probe_at == 5.0, "probes are still recorded, they just do not decide"


def test_a_stop_applied_after_a_probe_already_took_it_down_shows_the_stop() -> None:
    h = BackendHealth("b", unhealthy_threshold=1)
    h.apply_probe(UP, 1.0)
    h.apply_probe(REFUSED, 2.0)  # the probe saw the refusal first
    assert h.state is BackendState.DOWN and h.reason == "not answering"
    h.mark_stopped(WHY, 2.1)
    assert (h.state, h.reason) == (BackendState.DOWN, WHY)
