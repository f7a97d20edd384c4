"""`aifabric usage`: what the ledger says was used, grouped, as a table, JSON or CSV.

Reads the ledger the fabric file names (`usage:`; SQLite beside the state by default), so it works
with the gateway running or not, and with PostgreSQL it sees every replica's rows.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from typing import Any

from aifabric.config.durations import parse_duration
from aifabric.config.schema import FabricConfig
from aifabric.errors import CommandError
from aifabric.tenancy.ledger import GROUPINGS, ledger_opener

__all__ = ["FIELDS", "UsageReport", "parse_since", "usage_report"]

FIELDS = ("requests", "tokens_in", "tokens_out", "cost", "estimated", "errors")


def parse_since(text: str, now: float | None = None) -> float:
    """`7d`, `24h`, `30m` ago -> the wall-clock second it names."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise CommandError(f"--since {text!r} is not a duration: write e.g. 7d, 24h or 30m") from None
    return (time.time() if now is None else now) - seconds


@dataclass
class UsageReport:
    by: str
    since: float
    where: str
    rows: list[dict[str, Any]]

    def totals(self) -> dict[str, Any]:
        return {f: sum(r[f] for r in self.rows) for f in FIELDS}

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since,
            "ledger": self.where,
            "rows": self.rows,
            "total": self.totals(),
        }

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow((self.by, *FIELDS))
        for row in self.rows:
            writer.writerow((row[self.by], *(_csv_value(row[f]) for f in FIELDS)))
        return out.getvalue()

    def lines(self) -> list[str]:
        header = (self.by.upper(), "REQUESTS", "TOKENS IN", "TOKENS OUT", "COST", "ESTIMATED", "ERRORS")
        table = [header]
        for row in [*self.rows, {self.by: "total", **self.totals()}]:
            table.append(
                (
                    str(row[self.by]) or "-",
                    str(row["requests"]),
                    str(row["tokens_in"]),
                    str(row["tokens_out"]),
                    f"{row['cost']:.4f}",
                    str(row["estimated"]),
                    str(row["errors"]),
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        out = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in table
        ]
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.since))
        out.append(f"since {since}, from {self.where}; ESTIMATED: rows whose tokens the gateway counted")
        return out


def _csv_value(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def usage_report(config: FabricConfig, since: float, by: str) -> UsageReport:
    if by not in GROUPINGS:
        raise CommandError(f"--by {by!r}: group by one of {', '.join(GROUPINGS)}")
    opener = ledger_opener(config)
    if opener is None:
        raise CommandError(f"{config.source} has `usage: off`: there is no ledger to report from")
    store = opener()
    try:
        return UsageReport(by, since, store.where, store.summary(since, by))
    finally:
        store.close()
