"""The ledger and budgets as operators see them: the status page's `usage` section and `/metrics` lines.

Key names are labels: their number is bounded by the key store (and the ledger folds any past
MAX_KEYS into "other"), never by what clients send.
"""

from __future__ import annotations

from typing import Any

from aifabric.tenancy.budget import BudgetTracker
from aifabric.tenancy.ledger.writer import Ledger

__all__ = ["usage_metrics", "usage_view"]


def usage_view(ledger: Ledger | None, budgets: BudgetTracker) -> dict[str, Any]:
    """`/status`'s `usage`: this process's totals per key since it started, the ledger's health, and
    every budget with its spend in the current period."""
    if ledger is None:
        return {"enabled": False}
    stats = ledger.stats
    return {
        "enabled": True,
        "ledger": ledger.where,
        "written": stats.written,
        "pending": ledger.pending,
        "dropped": stats.dropped,
        "write_failures": stats.write_failures,
        "last_error": stats.last_error,
        "by_key": {
            name: {
                "requests": t.requests,
                "tokens_in": t.tokens_in,
                "tokens_out": t.tokens_out,
                "cost": round(t.cost, 6),
            }
            for name, t in sorted(stats.by_key.items())
        },
        "spend_today": {k: round(v, 6) for k, v in sorted(budgets.spend_today().items())},
        "budgets": [
            {
                "kind": u.kind,
                "name": u.name,
                "budget": str(u.budget),
                "period": str(u.budget.period),
                "amount": u.budget.amount,
                "spent": round(u.spent, 6),
                "fraction": round(u.fraction, 4),
                "exhausted": u.exhausted,
            }
            for u in budgets.uses()
        ],
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def usage_metrics(ledger: Ledger | None, budgets: BudgetTracker) -> list[str]:
    """Prometheus lines: tokens and cost by key (this process's, since it started), ledger health,
    budget spend."""
    if ledger is None:
        return []
    out = [
        "# HELP aifabric_usage_tokens_total Tokens used, by key and direction (in: prompt, out: completion).",
        "# TYPE aifabric_usage_tokens_total counter",
    ]
    totals = sorted(ledger.stats.by_key.items())
    for name, t in totals:
        key = _escape(name)
        out.append(f'aifabric_usage_tokens_total{{key="{key}",direction="in"}} {t.tokens_in}')
        out.append(f'aifabric_usage_tokens_total{{key="{key}",direction="out"}} {t.tokens_out}')
    out.append("# HELP aifabric_usage_cost_total Cost of the requests, by key, at the fabric file's prices.")
    out.append("# TYPE aifabric_usage_cost_total counter")
    for name, t in totals:
        out.append(f'aifabric_usage_cost_total{{key="{_escape(name)}"}} {t.cost:.6f}')
    out.append("# HELP aifabric_usage_ledger_rows_total Ledger rows written, and dropped (queue full).")
    out.append("# TYPE aifabric_usage_ledger_rows_total counter")
    out.append(f'aifabric_usage_ledger_rows_total{{outcome="written"}} {ledger.stats.written}')
    out.append(f'aifabric_usage_ledger_rows_total{{outcome="dropped"}} {ledger.stats.dropped}')
    out.append("# HELP aifabric_usage_ledger_pending Rows waiting for the ledger's writer.")
    out.append("# TYPE aifabric_usage_ledger_pending gauge")
    out.append(f"aifabric_usage_ledger_pending {ledger.pending}")
    out.append("# HELP aifabric_budget_spent_ratio Spend of a budget in its current period over its amount.")
    out.append("# TYPE aifabric_budget_spent_ratio gauge")
    for use in budgets.uses():
        labels = f'kind="{use.kind}",name="{_escape(use.name)}",period="{use.budget.period}"'
        out.append(f"aifabric_budget_spent_ratio{{{labels}}} {use.fraction:.6f}")
    return out
