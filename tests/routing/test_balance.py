"""Balancing policies and health tiers, over real TargetState objects with a seeded rng."""

from __future__ import annotations

import random
from collections import Counter

from routing_support import MakeTarget

from aifabric.core import BackendState, FailureClass
from aifabric.routing.balance import (
    least_outstanding,
    only_loading,
    order_candidates,
    order_plan,
    p2c_latency,
)


def names(targets: list) -> list[str]:  # type: ignore[type-arg]
    return [t.backend.name for t in targets]


def test_least_outstanding_prefers_fewest_in_flight_per_weight(make_target: MakeTarget) -> None:
    a = make_target("a", outstanding=3)
    b = make_target("b", outstanding=1)
    c = make_target("c", outstanding=4, weight=4.0)  # 1 per unit of weight
    order = least_outstanding([a, b, c], random.Random(0))
    assert names(order)[2] == "a"
    assert set(names(order)[:2]) == {"b", "c"}


def test_least_outstanding_splits_idle_traffic_by_weight(make_target: MakeTarget) -> None:
    heavy = make_target("heavy", weight=3.0)
    light = make_target("light", weight=1.0)
    rng = random.Random(42)
    firsts = Counter(least_outstanding([heavy, light], rng)[0].backend.name for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80


def test_least_outstanding_breaks_ties_at_random(make_target: MakeTarget) -> None:
    ts = [make_target(n) for n in "abcd"]
    rng = random.Random(1)
    firsts = Counter(least_outstanding(ts, rng)[0].backend.name for _ in range(2000))
    assert set(firsts) == set("abcd")
    assert min(firsts.values()) > 350


def test_p2c_steers_away_from_slow_and_busy_targets(make_target: MakeTarget) -> None:
    fast = make_target("fast", latency=0.1)
    slow = make_target("slow", latency=1.0)
    busy = make_target("busy", latency=0.1, outstanding=20)
    rng = random.Random(5)
    firsts = Counter(p2c_latency([fast, slow, busy], rng)[0].backend.name for _ in range(3000))
    # "fast" wins every draw it is part of (2 of 3 pairs); slow beats busy (1.0 < 2.1).
    assert firsts["busy"] == 0
    assert 0.6 < firsts["fast"] / 3000 < 0.73
    order = p2c_latency([fast, slow, busy], rng)
    assert len(order) == 3 and set(names(order)) == {"fast", "slow", "busy"}


def test_p2c_gives_unmeasured_targets_the_average_latency(make_target: MakeTarget) -> None:
    new = make_target("new")
    old = make_target("old", latency=0.5)
    rng = random.Random(9)
    firsts = Counter(p2c_latency([new, old], rng)[0].backend.name for _ in range(2000))
    assert 0.4 < firsts["new"] / 2000 < 0.6


def test_degraded_after_up_and_unavailable_dropped_while_something_is_healthy(
    make_target: MakeTarget,
) -> None:
    up = make_target("up")
    degraded = make_target("deg", state=BackendState.DEGRADED)
    down = make_target("down", state=BackendState.DOWN)
    asleep = make_target("asleep", state=BackendState.ASLEEP)
    loading = make_target("loading", state=BackendState.LOADING)
    unknown = make_target("new", state=BackendState.UNKNOWN)
    order = order_candidates([down, degraded, asleep, up, loading, unknown], 0.0, random.Random(0))
    assert set(names(order[:2])) == {"up", "new"}
    assert names(order[2:]) == ["deg"]


def test_ejected_target_is_skipped_while_another_is_available(make_target: MakeTarget) -> None:
    a = make_target("a")
    b = make_target("b")
    assert a.on_start(0.0).failure(FailureClass.UPSTREAM_5XX, 0.0) is True
    for seed in range(20):
        assert names(order_candidates([a, b], 1.0, random.Random(seed))) == ["b"]
    assert set(names(order_candidates([a, b], 10.0, random.Random(0)))) == {"a", "b"}, "half-open"


def test_panic_tries_everything_when_nothing_is_available(make_target: MakeTarget) -> None:
    asleep = make_target("asleep", state=BackendState.ASLEEP)
    down = make_target("down", state=BackendState.DOWN)
    loading = make_target("loading", state=BackendState.LOADING)
    ejected = make_target("ejected")
    ejected.on_start(0.0).failure(FailureClass.TIMEOUT, 0.0)
    order = order_candidates([asleep, down, loading, ejected], 1.0, random.Random(0))
    assert names(order) == ["ejected", "loading", "down", "asleep"]


def test_single_target_role_is_still_tried_when_ejected(make_target: MakeTarget) -> None:
    only = make_target("only")
    only.on_start(0.0).failure(FailureClass.CONNECT, 0.0)
    assert names(order_candidates([only], 1.0, random.Random(0))) == ["only"]


def test_mismatched_model_is_not_routed_to_on_kinds_that_enforce_the_id(make_target: MakeTarget) -> None:
    wrong = make_target("vllm-a", model="bge-base-en-v1.5", served=("BAAI/bge-base-en-v1.5",))
    right = make_target("vllm-b", model="bge-base-en-v1.5", served=("bge-base-en-v1.5",))
    lenient = make_target("lcp", kind="llama-cpp-python", model="bge-base-en-v1.5", served=("smollm2",))
    assert wrong.model_mismatch is not None
    assert "config says bge-base-en-v1.5, vllm-a serves BAAI/bge-base-en-v1.5" in wrong.model_mismatch
    assert right.model_mismatch is None
    assert lenient.model_mismatch is not None and lenient.available(0.0)
    assert set(names(order_candidates([wrong, right, lenient], 0.0, random.Random(0)))) == {"vllm-b", "lcp"}


def test_a_fallback_role_healthy_target_comes_before_the_primary_in_panic(make_target: MakeTarget) -> None:
    primary = make_target("armitage", state=BackendState.ASLEEP)
    cloud = make_target("openai", role="openai/strong")
    assert names(order_plan([[primary], [cloud]], 0.0, random.Random(0))) == ["openai"]
    cloud.health.state = BackendState.DOWN
    assert names(order_plan([[primary], [cloud]], 0.0, random.Random(0))) == ["openai", "armitage"]


def test_fallbacks_follow_the_primary_role_in_order(make_target: MakeTarget) -> None:
    a = make_target("a")
    b = make_target("b", state=BackendState.DEGRADED)
    f = make_target("f", role="fallback")
    assert names(order_plan([[a, b], [f]], 0.0, random.Random(0))) == ["a", "b", "f"]


def test_only_loading_says_when_a_warm_up_wait_is_worth_it(make_target: MakeTarget) -> None:
    loading = make_target("l", state=BackendState.LOADING)
    down = make_target("d", state=BackendState.DOWN)
    assert only_loading([loading, down], 0.0)
    assert not only_loading([down], 0.0)
    assert not only_loading([loading, make_target("u")], 0.0)
    assert not only_loading([], 0.0)
