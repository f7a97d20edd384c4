"""Prices and budgets as the fabric file (and `aifabric keys create --budget`) write them.

    price:  {input: 2.5, output: 10}     # per million tokens, in the estate's currency
    budget: 50/month                     # AMOUNT/PERIOD, PERIOD one of BUDGET_PERIODS

Pure parsing: the loader turns a `ValueError` from here into a located problem with a fix.
"""

from __future__ import annotations

import calendar
import enum
import re
import time
from dataclasses import dataclass

__all__ = [
    "BUDGET_PERIODS",
    "Budget",
    "BudgetPeriod",
    "Price",
    "format_amount",
    "parse_budget",
    "period_start",
]


class BudgetPeriod(enum.StrEnum):
    """A budget's calendar period, in UTC."""

    DAY = "day"
    MONTH = "month"


BUDGET_PERIODS = tuple(p.value for p in BudgetPeriod)

_BUDGET = re.compile(r"\s*\$?\s*(\d+(?:\.\d+)?|\.\d+)\s*/\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class Price:
    """What a target model costs per million tokens. Local models cost 0, or an electricity figure."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class Budget:
    """`50/month`: at most `amount` (in the currency of the fabric file's prices) per calendar period.
    The one definition for keys (`keys create --budget`) and backends (`budget:` in the fabric file)."""

    amount: float
    period: BudgetPeriod

    def __str__(self) -> str:
        return f"{format_amount(self.amount)}/{self.period}"


def format_amount(amount: float) -> str:
    """An amount as people write it: `50`, `12.5`, `0.00001` (never `1e-05`)."""
    return f"{amount:.8f}".rstrip("0").rstrip(".") or "0"


def parse_budget(text: str) -> Budget:
    """`50/month`, `5.5/day`, `$20/day` -> Budget. Raises ValueError with what is wrong."""
    match = _BUDGET.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not AMOUNT/PERIOD: write e.g. 20/day or 500/month")
    period = match.group(2)
    if period not in BUDGET_PERIODS:
        raise ValueError(
            f"the period {period!r} is not one of {', '.join(BUDGET_PERIODS)} (AMOUNT/PERIOD, e.g. 20/day)"
        )
    return Budget(float(match.group(1)), BudgetPeriod(period))


def period_start(period: BudgetPeriod, now: float | None = None) -> float:
    """The wall-clock second the current `period` began (UTC midnight, or the 1st of the month)."""
    t = time.gmtime(time.time() if now is None else now)
    day = 1 if period is BudgetPeriod.MONTH else t.tm_mday
    return float(calendar.timegm((t.tm_year, t.tm_mon, day, 0, 0, 0, 0, 0, 0)))
