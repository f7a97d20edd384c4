"""Overflow on purpose: a role whose own targets are all saturated sends new requests to its fallbacks.

Failover (balance.order_plan) moves to the fallbacks only when the role's targets cannot serve at all.
Overflow moves earlier, by the role's `overflow:` bounds (`queue_depth`, `estimated_wait`, judged by
routing.load on the engines' signals): when every available target of the role is saturated and a
fallback has an available target, the fallbacks lead and the role's own targets follow (still better
than failing if the fallbacks fail). The decision is made again for every request, on the latest
load, so traffic comes back to the role's own targets as soon as one of their queues drains below
the bound. Pure: no clock, no I/O; the randomness is the balancer's, injected.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aifabric.config.schema import BalancePolicy, OverflowConfig
from aifabric.routing.balance import order_plan, split_tiers
from aifabric.routing.load import saturated
from aifabric.routing.target import TargetState

__all__ = ["all_saturated", "overflow_order"]


def all_saturated(targets: Sequence[TargetState], now: float, overflow: OverflowConfig) -> bool:
    """Every available target is saturated (and there is at least one: an unavailable role fails
    over, it does not overflow)."""
    up, degraded, _ = split_tiers(targets, now)
    local = up + degraded
    return bool(local) and all(saturated(t, overflow) for t in local)


def overflow_order(
    groups: Sequence[Sequence[TargetState]],
    now: float,
    rng: random.Random,
    policy: BalancePolicy,
    overflow: OverflowConfig,
) -> list[TargetState] | None:
    """The plan when the role (`groups[0]`) overflows: fallbacks' targets first, then its own; None when
    it does not (a target of its own has room, or no fallback target is available). O(targets)."""
    if len(groups) < 2 or not all_saturated(groups[0], now, overflow):
        return None
    if not any(t.available(now) for group in groups[1:] for t in group):
        return None
    elsewhere = order_plan(groups[1:], now, rng, policy)
    return elsewhere + order_plan(groups[:1], now, rng, policy)
