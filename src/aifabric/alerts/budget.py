"""The `budget` rule: a key's or backend's budget 80% spent (WARNING), then 100% (CRITICAL).

Pure, like the health rules beside it: it reads `BudgetFact`s (the usage ledger's spend in the current
period, handed in by the gateway) and returns the alerts that hold; `AlertTracker` makes each fire
once. Crossing 100% is a new alert (the WARNING resolves as the CRITICAL fires), so a sink hears both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aifabric.alerts.rules import Alert, Severity
from aifabric.config.money import format_amount

__all__ = ["BUDGET_WARN", "BudgetFact", "budget_alerts"]

BUDGET_WARN = 0.8  # the share of a budget at which the WARNING fires


@dataclass(frozen=True, slots=True)
class BudgetFact:
    """One budget and its spend in the current period, as the usage ledger knows it."""

    kind: str  # "key" or "backend"
    name: str
    spent: float
    amount: float
    period: str  # "day" or "month"


def budget_alerts(facts: Iterable[BudgetFact]) -> list[Alert]:
    """The alerts of the `budget` rule that hold for `facts`."""
    alerts = []
    for f in facts:
        if f.amount <= 0 or f.spent < BUDGET_WARN * f.amount:
            continue
        spent = f.spent >= f.amount
        if f.kind == "backend":
            effect = (
                "it is out of routing: its roles go to their other targets and fallbacks"
                if spent
                else "at 100% it drops out of routing"
            )
        else:
            effect = "its requests get 429" if spent else "at 100% its requests get 429"
        alerts.append(
            Alert(
                rule="budget",
                subject=f"{f.kind}:{f.name}",
                severity=Severity.CRITICAL if spent else Severity.WARNING,
                summary=(
                    f"{f.kind} {f.name} has spent {format_amount(f.spent)} of its budget of "
                    f"{format_amount(f.amount)}/{f.period} ({100 * f.spent / f.amount:.0f}%)"
                ),
                fix=(
                    f"{effect} until the {f.period} ends (UTC). Raise the budget ("
                    + (
                        f"`backends.{f.name}.budget` in the fabric file"
                        if f.kind == "backend"
                        else f"`aifabric keys update {f.name} --budget AMOUNT/{f.period}`"
                    )
                    + ") or see who spent it: "
                    f"`aifabric usage --by {'key' if f.kind == 'backend' else 'model'} --since 1d`."
                ),
            )
        )
    return alerts
