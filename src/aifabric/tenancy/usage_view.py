"""The ledger and budgets as operators see them: the status page's `usage` section and `/metrics` lines.

Key names are labels: their number is bounded by the key store (and the ledger folds any past
MAX_KEYS into "other"), never by what clients send.

Under `aifabric serve --workers N` each worker's ledger writer counts the rows it wrote; `/metrics`
sums the counters below over the workers (observability.merged), and `usage_view` reads the same sums
back (`summed`), so `/status` shows the whole gateway's usage whichever worker answers. Nothing is
added on the request path: the totals are the ones the writer keeps anyway, summed when read.
"""

from __future__ import annotations

from typing import Any

from aifabric.observability.merged import SummedCounters, counter_samples, samples
from aifabric.tenancy.budget import BudgetTracker
from aifabric.tenancy.ledger.writer import KeyTotals, Ledger

__all__ = ["usage_metrics", "usage_view"]


# The metric families, written by `usage_metrics` and read back from the workers' sums by `usage_view`.
REQUESTS = "aifabric_usage_requests_total"
TOKENS = "aifabric_usage_tokens_total"
COST = "aifabric_usage_cost_total"
ROWS = "aifabric_usage_ledger_rows_total"
WRITE_FAILURES = "aifabric_usage_ledger_write_failures_total"
PENDING = "aifabric_usage_ledger_pending"


def usage_view(
    ledger: Ledger | None, budgets: BudgetTracker, summed: SummedCounters | None = None
) -> dict[str, Any]:
    """`/status`'s `usage`: the totals per key since the gateway started, the ledger's health, and
    every budget with its spend in the current period.

    `summed`: under `serve --workers N`, every worker's counters (observability.merged); then `by_key`,
    `written`, `dropped`, `write_failures` and `pending` are the workers' sums, and `workers` says how
    many they are (1 when `summed` is None: this process's own). `ledger` and `last_error` are this
    process's; `spend_today` and `budgets` come from the ledger's store, which all workers share."""
    if ledger is None:
        return {"enabled": False}
    stats = ledger.stats
    by_key, written, dropped, failures, pending = (
        stats.by_key,
        stats.written,
        stats.dropped,
        stats.write_failures,
        ledger.pending,
    )
    if summed is not None:
        by_key = _summed_by_key(summed.exposition)
        rows = counter_samples(summed.exposition, ROWS)
        written, dropped = rows.get(("written",), 0), rows.get(("dropped",), 0)
        failures = counter_samples(summed.exposition, WRITE_FAILURES).get((), 0)
        pending = round(summed.gauge_total(PENDING))
    return {
        "enabled": True,
        "ledger": ledger.where,
        "written": written,
        "pending": pending,
        "dropped": dropped,
        "write_failures": failures,
        "last_error": stats.last_error,
        "workers": summed.workers if summed is not None else 1,
        "by_key": {
            name: {
                "requests": t.requests,
                "tokens_in": t.tokens_in,
                "tokens_out": t.tokens_out,
                "cost": round(t.cost, 6),
            }
            for name, t in sorted(by_key.items())
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


def _summed_by_key(exposition: str) -> dict[str, KeyTotals]:
    """The totals per key, as the workers' summed counters have them (a sample with other labels than
    `usage_metrics` writes is passed over: /status never fails on a worker's file)."""
    out: dict[str, KeyTotals] = {}
    for labels, n in counter_samples(exposition, REQUESTS).items():
        if len(labels) == 1:
            out.setdefault(labels[0], KeyTotals()).requests = n
    for labels, n in counter_samples(exposition, TOKENS).items():
        if len(labels) == 2 and labels[1] in ("in", "out"):
            totals = out.setdefault(labels[0], KeyTotals())
            if labels[1] == "in":
                totals.tokens_in = n
            else:
                totals.tokens_out = n
    for labels, cost in samples(exposition, COST).items():
        if len(labels) == 1:
            out.setdefault(labels[0], KeyTotals()).cost = cost
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def usage_metrics(ledger: Ledger | None, budgets: BudgetTracker) -> list[str]:
    """Prometheus lines: requests, tokens and cost by key (this process's, since it started), ledger
    health, budget spend."""
    if ledger is None:
        return []
    stats = ledger.stats
    totals = sorted(stats.by_key.items())
    out = [f"# HELP {REQUESTS} Requests written to the ledger, by key.", f"# TYPE {REQUESTS} counter"]
    for name, t in totals:
        out.append(f'{REQUESTS}{{key="{_escape(name)}"}} {t.requests}')
    out.append(f"# HELP {TOKENS} Tokens used, by key and direction (in: prompt, out: completion).")
    out.append(f"# TYPE {TOKENS} counter")
    for name, t in totals:
        key = _escape(name)
        out.append(f'{TOKENS}{{key="{key}",direction="in"}} {t.tokens_in}')
        out.append(f'{TOKENS}{{key="{key}",direction="out"}} {t.tokens_out}')
    out.append(f"# HELP {COST} Cost of the requests, by key, at the fabric file's prices.")
    out.append(f"# TYPE {COST} counter")
    for name, t in totals:
        out.append(f'{COST}{{key="{_escape(name)}"}} {t.cost:.6f}')
    out.append(f"# HELP {ROWS} Ledger rows written, and dropped (queue full).")
    out.append(f"# TYPE {ROWS} counter")
    out.append(f'{ROWS}{{outcome="written"}} {stats.written}')
    out.append(f'{ROWS}{{outcome="dropped"}} {stats.dropped}')
    out.append(
        f"# HELP {WRITE_FAILURES} Writes and refreshes the ledger's store failed (rows are kept, retried)."
    )
    out.append(f"# TYPE {WRITE_FAILURES} counter")
    out.append(f"{WRITE_FAILURES} {stats.write_failures}")
    out.append(f"# HELP {PENDING} Rows waiting for the ledger's writer.")
    out.append(f"# TYPE {PENDING} gauge")
    out.append(f"{PENDING} {ledger.pending}")
    out.append("# HELP aifabric_budget_spent_ratio Spend of a budget in its current period over its amount.")
    out.append("# TYPE aifabric_budget_spent_ratio gauge")
    for use in budgets.uses():
        labels = f'kind="{use.kind}",name="{_escape(use.name)}",period="{use.budget.period}"'
        out.append(f"aifabric_budget_spent_ratio{{{labels}}} {use.fraction:.6f}")
    return out
