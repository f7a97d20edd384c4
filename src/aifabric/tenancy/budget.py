"""Budgets: spend per key and per backend in the current day and month, and who is over.

    backends:
      openai: {kind: openai, url: ..., budget: 50/month}    # over it: out of routing until the month ends
    aifabric keys create --name app --budget 5/day           # over it: the key gets 429

The ledger's writer thread feeds the tracker: `add` after each batch it wrote (this process's spend at
once), `refresh` every few seconds from the store (every worker's and replica's spend, and a new
period at midnight UTC). The request path only reads: `blocked_backends` (a dict swapped whole) and
`key_over` (two dict lookups). So a budget is enforced within a batch interval of the request that
crossed it, and a request already running when it is crossed completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aifabric.config.money import Budget, BudgetPeriod, format_amount, period_start
from aifabric.config.schema import FabricConfig
from aifabric.tenancy.ledger.base import LedgerStore, SpendDelta, spend_deltas
from aifabric.tenancy.ledger.record import UsageRow

__all__ = ["BudgetTracker", "BudgetUse"]


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """How much of one budget is spent: what the status page shows and the `budget` alert reads."""

    kind: str  # "key" or "backend"
    name: str
    budget: Budget
    spent: float

    @property
    def fraction(self) -> float:
        return self.spent / self.budget.amount if self.budget.amount > 0 else float("inf")

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget.amount

    def message(self) -> str:
        return (
            f"the {self.kind} '{self.name}' has spent {format_amount(self.spent)} of its budget of "
            f"{self.budget} (resets at the start of the next {self.budget.period}, UTC)"
        )


class BudgetTracker:
    def __init__(self, config: FabricConfig, *, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._backend_budgets: dict[str, Budget] = {}
        # period -> (its start, spend per key, spend per backend)
        self._spend: dict[BudgetPeriod, tuple[float, dict[str, float], dict[str, float]]] = {
            p: (period_start(p, wall()), {}, {}) for p in BudgetPeriod
        }
        self._key_budgets: dict[str, Budget] = {}  # seen on requests: for the status page and alerts
        self.blocked_backends: Mapping[str, str] = {}
        self.update_config(config)

    def update_config(self, config: FabricConfig) -> None:
        self._backend_budgets = {n: b.budget for n, b in config.backends.items() if b.budget is not None}
        self._recompute()

    # -- the request path (reads only) -------------------------------------------------------------

    def key_over(self, name: str, budget: Budget) -> str | None:
        """Why the key may not spend more now, or None."""
        if self._key_budgets.get(name) != budget:
            self._key_budgets[name] = budget
        spent = self._spend[budget.period][1].get(name, 0.0)
        if spent >= budget.amount:
            return BudgetUse("key", name, budget, spent).message()
        return None

    # -- the writer thread ---------------------------------------------------------------------------

    def add(self, rows: Iterable[UsageRow]) -> None:
        """Costs of rows this process just wrote to the ledger."""
        self.add_spend(spend_deltas(list(rows)))

    def add_spend(self, deltas: SpendDelta) -> None:
        """What a batch this process just wrote added to each spend (the store's `spend_deltas`)."""
        changed = False
        for (period, start, kind, name), cost in deltas.items():
            current = self._spend.get(BudgetPeriod(period))
            if current is None or current[0] != start:
                continue  # a period that is over (or not yet read): the next refresh says
            totals = current[1] if kind == "key" else current[2]
            totals[name] = totals.get(name, 0.0) + cost
            changed = True
        if changed:
            self._recompute()

    def refresh(self, store: LedgerStore) -> None:
        """Spend of the current periods as the ledger has it (every process's rows)."""
        now = self._wall()
        fresh = {}
        for period in BudgetPeriod:
            start = period_start(period, now)
            keys, backends = store.spend(period, start)
            fresh[period] = (start, keys, backends)
        self._spend = fresh
        self._recompute()

    def _recompute(self) -> None:
        blocked = {}
        for use in self._uses(("backend",)):
            if use.exhausted:
                blocked[use.name] = use.message()
        self.blocked_backends = blocked

    # -- views -----------------------------------------------------------------------------------

    def _uses(self, kinds: tuple[str, ...] = ("key", "backend")) -> list[BudgetUse]:
        out = []
        if "backend" in kinds:
            for name, budget in sorted(self._backend_budgets.items()):
                out.append(BudgetUse("backend", name, budget, self._spend[budget.period][2].get(name, 0.0)))
        if "key" in kinds:
            for name, budget in sorted(self._key_budgets.items()):
                out.append(BudgetUse("key", name, budget, self._spend[budget.period][1].get(name, 0.0)))
        return out

    def uses(self) -> list[BudgetUse]:
        """Every budget known here and its spend: backends' from the fabric file, keys' once seen."""
        return self._uses()

    def spend_today(self) -> dict[str, float]:
        """Cost per key since midnight UTC."""
        return dict(self._spend[BudgetPeriod.DAY][1])
