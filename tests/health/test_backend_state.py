"""The backend state machine, fed probe results with a fake clock."""

from __future__ import annotations

from aifabric.core import BackendHealth, BackendState, FailureClass, ProbeResult, Transition

UP = ProbeResult(True, BackendState.UP, "serving", 0.01, ("m",))
SATURATED = ProbeResult(True, BackendState.DEGRADED, "saturated: 9 requests waiting", 0.01, ("m",))
REFUSED = ProbeResult(False, BackendState.DOWN, "not answering", 0.001, failure=FailureClass.CONNECT)
TIMED_OUT = ProbeResult(False, BackendState.DOWN, "no answer", 3.0, failure=FailureClass.TIMEOUT)
ERROR_500 = ProbeResult(
    False, BackendState.DOWN, "GET /health answered 500", 0.01, failure=FailureClass.UPSTREAM_5XX
)
LOADING = ProbeResult(False, BackendState.LOADING, "loading its model", 0.01, failure=FailureClass.LOADING)


def test_first_probe_decides_and_is_reported_once() -> None:
    h = BackendHealth("b")
    assert h.routable, "not probed yet: routable, so a fresh gateway serves at once"
    t = h.apply_probe(UP, 1.0)
    assert t == Transition("b", BackendState.UNKNOWN, BackendState.UP, "serving")
    assert h.apply_probe(UP, 2.0) is None
    assert h.since == 1.0
    assert h.served_models == ("m",)


def test_down_needs_unhealthy_threshold_failures_in_a_row() -> None:
    h = BackendHealth("b", unhealthy_threshold=2)
    h.apply_probe(UP, 0.0)
    assert h.apply_probe(REFUSED, 1.0) is None
    assert h.state is BackendState.UP and "1/2 failed probes" in h.reason
    t = h.apply_probe(REFUSED, 2.0)
    assert t is not None and t.new is BackendState.DOWN
    assert h.apply_probe(REFUSED, 3.0) is None, "reported once"
    assert not h.routable


def test_recovery_needs_healthy_threshold_successes() -> None:
    h = BackendHealth("b", healthy_threshold=2, unhealthy_threshold=1)
    h.apply_probe(ERROR_500, 0.0)
    assert h.state is BackendState.DOWN
    assert h.apply_probe(UP, 1.0) is None
    assert h.state is BackendState.DOWN
    t = h.apply_probe(UP, 2.0)
    assert t is not None and (t.old, t.new) == (BackendState.DOWN, BackendState.UP)


def test_workstation_that_does_not_answer_is_asleep_not_down() -> None:
    h = BackendHealth("wintermute-vllm", always_on=False, unhealthy_threshold=1)
    t = h.apply_probe(REFUSED, 0.0)
    assert t is not None and t.new is BackendState.ASLEEP
    h2 = BackendHealth("armitage-vllm", always_on=False, unhealthy_threshold=1)
    assert h2.apply_probe(TIMED_OUT, 0.0) is not None
    assert h2.state is BackendState.ASLEEP


def test_workstation_that_answers_with_an_error_is_down() -> None:
    h = BackendHealth("wintermute-vllm", always_on=False, unhealthy_threshold=1)
    h.apply_probe(ERROR_500, 0.0)
    assert h.state is BackendState.DOWN


def test_always_on_host_that_does_not_answer_is_down() -> None:
    h = BackendHealth("motoko-embed", always_on=True, unhealthy_threshold=1)
    h.apply_probe(REFUSED, 0.0)
    assert h.state is BackendState.DOWN


def test_loading_needs_no_threshold_and_ready_follows() -> None:
    h = BackendHealth("b", healthy_threshold=3, unhealthy_threshold=3)
    h.apply_probe(UP, 0.0)
    t = h.apply_probe(LOADING, 1.0)
    assert t is not None and t.new is BackendState.LOADING
    assert not h.routable
    for now in (2.0, 3.0):
        assert h.apply_probe(UP, now) is None
    t = h.apply_probe(UP, 4.0)
    assert t is not None and t.new is BackendState.UP


def test_degraded_and_back_at_once_with_the_reason() -> None:
    h = BackendHealth("b")
    h.apply_probe(UP, 0.0)
    t = h.apply_probe(SATURATED, 1.0)
    assert t is not None and t.new is BackendState.DEGRADED
    assert h.reason == "saturated: 9 requests waiting"
    assert h.routable
    t = h.apply_probe(UP, 2.0)
    assert t is not None and t.new is BackendState.UP


def test_snapshot_is_json_ready() -> None:
    h = BackendHealth("b")
    h.apply_probe(SATURATED, 10.0)
    snap = h.snapshot(15.0)
    assert snap["state"] == "degraded"
    assert snap["for_seconds"] == 5.0
    assert snap["probe_latency_ms"] == 10.0
    assert snap["served_models"] == ["m"]


def test_a_backend_its_supervisor_restarts_is_loading_until_a_probe_finds_it() -> None:
    h = BackendHealth("b", unhealthy_threshold=1)
    h.apply_probe(UP, 1.0)
    t = h.mark_launching("b was killed by signal 9; restarting", 2.0)
    assert t is not None and t.new is BackendState.LOADING
    # Refused while it restarts: still loading (requests wait), not down, and the reason stays.
    assert h.apply_probe(REFUSED, 3.0) is None
    assert h.state is BackendState.LOADING and "restarting" in h.reason
    assert h.apply_probe(UP, 4.0) == Transition("b", BackendState.LOADING, BackendState.UP, "serving")
    # Once it served again, a refusal is an outage as usual.
    h.apply_probe(REFUSED, 5.0)
    assert h.state is BackendState.DOWN
