"""Load estimates, the least_load policy and overflow, over real TargetState objects (no sockets)."""

from __future__ import annotations

import random
from collections import Counter

from routing_support import MakeTarget

from aifabric.config.schema import OverflowConfig
from aifabric.core import BackendState
from aifabric.routing.load import estimate, least_load, saturated
from aifabric.routing.overflow import all_saturated, overflow_order


def names(targets: list) -> list[str]:  # type: ignore[type-arg]
    return [t.backend.name for t in targets]


def test_vllm_signals_are_read_as_running_and_waiting(make_target: MakeTarget) -> None:
    t = make_target("gpu")
    t.health.load = {"requests_running": 8.0, "requests_waiting": 4.0, "kv_cache_usage": 0.9}
    est = estimate(t)
    assert (est.running, est.waiting, est.capacity, est.utilization) == (8.0, 4.0, 8.0, 0.9)
    assert est.wait_rounds == 0.5  # half a batch queued ahead of a new request
    assert est.estimated_wait(2.0) == 1.0


def test_requests_sent_since_the_probe_count_too(make_target: MakeTarget) -> None:
    """The probe's numbers are up to an interval old; the gateway's own in-flight count is live."""
    t = make_target("gpu")
    t.health.load = {"requests_running": 2.0, "requests_waiting": 0.0}
    t.health.in_flight = 5
    assert estimate(t).running == 5.0  # not queueing at the probe: the new ones are assumed running
    t.health.load = {"requests_running": 2.0, "requests_waiting": 1.0}
    assert estimate(t).waiting == 3.0  # queueing at the probe: the two new ones queue behind


def test_llama_server_slots_bound_what_runs(make_target: MakeTarget) -> None:
    t = make_target("box", kind="llamacpp")
    t.health.load = {"slots_busy": 1.0, "slots_total": 2.0}
    assert estimate(t).waiting == 0.0
    t.health.in_flight = 5  # more than its slots: the rest wait
    est = estimate(t)
    assert (est.running, est.waiting, est.capacity, est.utilization) == (2.0, 3.0, 2.0, 1.0)
    t.health.in_flight = 0
    t.health.load = {"slots_busy": 2.0, "slots_total": 2.0, "requests_waiting": 2.0}  # /metrics' deferred
    assert estimate(t).waiting == 2.0


def test_a_kind_without_signals_has_only_the_gateways_in_flight_count(make_target: MakeTarget) -> None:
    t = make_target("cloud", kind="openai")
    t.health.in_flight = 3
    est = estimate(t)
    assert (est.signal, est.waiting, est.running) == (False, 3.0, 0.0)


def test_least_load_prefers_the_shorter_queue_then_the_emptier_cache(make_target: MakeTarget) -> None:
    queued = make_target("queued")
    queued.health.load = {"requests_running": 4.0, "requests_waiting": 2.0, "kv_cache_usage": 0.5}
    full = make_target("full")
    full.health.load = {"requests_running": 4.0, "requests_waiting": 0.0, "kv_cache_usage": 0.8}
    light = make_target("light")
    light.health.load = {"requests_running": 1.0, "requests_waiting": 0.0, "kv_cache_usage": 0.1}
    for seed in range(20):
        assert names(least_load([queued, full, light], random.Random(seed))) == ["light", "full", "queued"]


def test_least_load_splits_an_idle_estate_by_weight(make_target: MakeTarget) -> None:
    heavy = make_target("heavy", weight=3.0)
    light = make_target("light", weight=1.0)
    for t in (heavy, light):
        t.health.load = {"requests_running": 0.0, "requests_waiting": 0.0, "kv_cache_usage": 0.0}
    rng = random.Random(7)
    firsts = Counter(least_load([heavy, light], rng)[0].backend.name for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80


def test_saturation_by_queue_depth_and_by_estimated_wait(make_target: MakeTarget) -> None:
    t = make_target("gpu", latency=3.0)
    t.health.load = {"requests_running": 4.0, "requests_waiting": 3.0}
    assert not saturated(t, OverflowConfig(queue_depth=4))
    assert saturated(t, OverflowConfig(queue_depth=3))
    # 3 waiting over a batch of 4 at 3 s a request: 2.25 s before a new one starts.
    assert saturated(t, OverflowConfig(estimated_wait=2.0))
    assert not saturated(t, OverflowConfig(estimated_wait=2.5))
    fresh = make_target("fresh")  # never answered: its wait cannot be estimated, so it is not judged
    fresh.health.load = {"requests_running": 4.0, "requests_waiting": 3.0}
    assert not saturated(fresh, OverflowConfig(estimated_wait=0.5))


def _saturate(t: object, waiting: float) -> None:
    t.health.load = {"requests_running": 4.0, "requests_waiting": waiting}  # type: ignore[attr-defined]


def test_overflow_goes_to_the_fallbacks_only_while_every_local_target_is_saturated(
    make_target: MakeTarget,
) -> None:
    a, b = make_target("a"), make_target("b")
    cloud = make_target("cloud", role="openai/strong", kind="openai")
    bound = OverflowConfig(queue_depth=2)
    rng = random.Random(0)
    _saturate(a, 5)
    _saturate(b, 0)
    assert overflow_order([[a, b], [cloud]], 0.0, rng, "least_load", bound) is None  # b has room
    _saturate(b, 2)
    plan = overflow_order([[a, b], [cloud]], 0.0, rng, "least_load", bound)
    assert plan is not None
    assert names(plan) == ["cloud", "b", "a"]  # the local targets stay behind it, least loaded first
    _saturate(a, 1)  # a's queue drains below the bound: the role serves itself again
    assert overflow_order([[a, b], [cloud]], 0.0, rng, "least_load", bound) is None


def test_no_overflow_without_an_available_fallback_or_any_local_target(make_target: MakeTarget) -> None:
    a = make_target("a")
    cloud = make_target("cloud", role="openai/strong", kind="openai", state=BackendState.DOWN)
    bound = OverflowConfig(queue_depth=1)
    _saturate(a, 3)
    assert overflow_order([[a], [cloud]], 0.0, random.Random(0), "p2c", bound) is None
    # A role whose targets are all down fails over (balance.order_plan); that is not an overflow.
    down = make_target("down", state=BackendState.DOWN)
    assert not all_saturated([down], 0.0, bound)
