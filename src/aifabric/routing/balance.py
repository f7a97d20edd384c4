"""Balancing policies: pure functions ordering a role's targets, randomness injected.

Every policy returns a full ordering, not one pick: the first entry gets the request, the next ones
are where the retry loop fails over to.

- `least_outstanding`: fewest requests in flight per unit of weight first; ties are broken by a
  weighted random draw, so an idle estate still splits traffic by weight.
- `least_load` (routing.load): least loaded by the engines' own signals (queue, then KV cache / slots in
  use), merged with the gateway's live in-flight count; the default for a role whose targets report load.
- `p2c_latency`: power of two choices (Mitzenmacher) on cost = EWMA latency x (outstanding + 1) /
  weight: draw two targets at random, the cheaper one leads; the rest follow by cost. It avoids the
  herd that "always the fastest" causes while still steering away from a slow or busy target.

`order_candidates` puts the policies under the health tiers (Envoy's priorities + panic threshold):

    1. available targets on a backend that is up (or not probed yet)
    2. available targets on a degraded (saturated) backend
    3. only when 1 and 2 are empty, the rest anyway ("panic"): better to try an ejected or stale-down
       target than to fail for sure. Ordered by how likely they answer: ejected-but-up first, then
       loading / mismatched, then down, asleep last (a sleeping workstation costs a connect timeout).
       Fallback roles' targets of a better rank come before the primary's of a worse one.

`order_plan` does the same over a role and its fallback roles, so the panic tier of the primary role
comes after every healthy target of its fallbacks, never before.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from aifabric.config.schema import BalancePolicy
from aifabric.core import BackendState
from aifabric.routing.load import least_load
from aifabric.routing.target import TargetState

__all__ = [
    "POLICIES",
    "Policy",
    "least_outstanding",
    "only_loading",
    "order_candidates",
    "order_plan",
    "p2c_latency",
    "split_tiers",
]

Policy = BalancePolicy  # the names a role's `balance:` may take (config.schema); POLICIES maps each

# Ranks within the panic tier: lower is tried first.
_PANIC_RANK = {
    BackendState.UP: 0,
    BackendState.DEGRADED: 0,
    BackendState.UNKNOWN: 0,
    BackendState.LOADING: 1,
    BackendState.DOWN: 2,
    BackendState.ASLEEP: 3,
}


def _weighted_keys(targets: Sequence[TargetState], rng: random.Random) -> dict[int, float]:
    """A weighted random permutation key per target (Efraimidis-Spirakis): smaller comes first."""
    keys: dict[int, float] = {}
    for t in targets:
        u = rng.random() or 1e-12
        keys[id(t)] = -math.log(u) / t.weight if t.weight > 0 else math.inf
    return keys


def least_outstanding(targets: Sequence[TargetState], rng: random.Random) -> list[TargetState]:
    """Fewest outstanding requests per weight first; ties by weighted random draw."""
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: (_per_weight(t.outstanding, t.weight), keys[id(t)]))


def _per_weight(value: float, weight: float) -> float:
    return value / weight if weight > 0 else math.inf


def _latency_cost(targets: Sequence[TargetState]) -> Callable[[TargetState], float]:
    known = [t.ewma_latency for t in targets if t.ewma_latency > 0]
    # A target without a measurement yet competes at the average of the others: neither starved
    # nor flooded until its first answers come in.
    prior = sum(known) / len(known) if known else 1.0

    def cost(t: TargetState) -> float:
        latency = t.ewma_latency if t.ewma_latency > 0 else prior
        return _per_weight(latency * (t.outstanding + 1), t.weight)

    return cost


def p2c_latency(targets: Sequence[TargetState], rng: random.Random) -> list[TargetState]:
    """Power of two choices on EWMA latency x (outstanding + 1) / weight; the rest by cost."""
    if len(targets) <= 1:
        return list(targets)
    cost = _latency_cost(targets)
    keys = _weighted_keys(targets, rng)
    a, b = rng.sample(range(len(targets)), 2)
    first, second = targets[a], targets[b]
    winner = first if (cost(first), keys[id(first)]) <= (cost(second), keys[id(second)]) else second
    rest = sorted((t for t in targets if t is not winner), key=lambda t: (cost(t), keys[id(t)]))
    return [winner, *rest]


POLICIES: dict[BalancePolicy, Callable[[Sequence[TargetState], random.Random], list[TargetState]]] = {
    "p2c": p2c_latency,
    "least_outstanding": least_outstanding,
    "least_load": least_load,
}


def split_tiers(
    targets: Sequence[TargetState], now: float
) -> tuple[list[TargetState], list[TargetState], list[TargetState]]:
    """(up, degraded, unavailable): the health tiers, each in input order."""
    up: list[TargetState] = []
    degraded: list[TargetState] = []
    rest: list[TargetState] = []
    for t in targets:
        if not t.available(now):
            rest.append(t)
        elif t.health.state is BackendState.DEGRADED:
            degraded.append(t)
        else:
            up.append(t)
    return up, degraded, rest


def _panic_rank(t: TargetState) -> int:
    base = _PANIC_RANK[t.health.state]
    if base == 0 and t.mismatch_blocks:
        return 1  # it would answer 404 unless the model list was stale
    return base


def order_candidates(
    targets: Sequence[TargetState],
    now: float,
    rng: random.Random,
    policy: Policy = "p2c",
) -> list[TargetState]:
    """The role's targets in the order to try them (see the module docstring)."""
    return order_plan((targets,), now, rng, policy)


def order_plan(
    groups: Sequence[Sequence[TargetState]],
    now: float,
    rng: random.Random,
    policy: Policy = "p2c",
) -> list[TargetState]:
    """A role's targets then each fallback role's (`groups` in that order), health tiers first.

    Each group's up then degraded targets, group after group; only when no target of any group is
    available, every target anyway in panic order: by rank (how likely it answers), then group
    order, then the policy's order.
    """
    balance = POLICIES[policy]
    healthy: list[TargetState] = []
    for group in groups:
        up, degraded, _ = split_tiers(group, now)
        healthy.extend(balance(up, rng))
        healthy.extend(balance(degraded, rng))
    if healthy:
        return healthy
    panic: list[TargetState] = []
    for group in groups:
        panic.extend(balance(group, rng))
    return sorted(panic, key=_panic_rank)  # stable: group order, then the policy's, within a rank


def only_loading(targets: Sequence[TargetState], now: float) -> bool:
    """True when nothing is available and something is still loading: worth holding the request
    (the warm-up wait) rather than failing it."""
    return (
        bool(targets)
        and not any(t.available(now) for t in targets)
        and any(t.health.state is BackendState.LOADING for t in targets)
    )
