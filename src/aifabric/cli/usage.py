"""`aifabric usage [--since 7d] [--by key|role|backend|model|day] [--json|--csv] [--config FILE]`:
requests, tokens and cost from the usage ledger (see aifabric.ops.usage)."""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console
from aifabric.core import exit_codes
from aifabric.tenancy.ledger import GROUPINGS

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "usage"
HELP = "Requests, tokens and cost from the usage ledger, grouped by key, role, backend, model or day."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
    parser.add_argument("--since", default="7d", help="how far back: 7d, 24h, 30m (default 7d)")
    parser.add_argument("--by", choices=GROUPINGS, default="key", help="group by (default key)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument("--csv", action="store_true", help="print CSV")


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.config.defaults import load_config_or_default
    from aifabric.ops.usage import parse_since, usage_report

    config = load_config_or_default(args.config)
    report = usage_report(config, parse_since(args.since), args.by)
    if args.json:
        console.json(report.to_json())
    elif args.csv:
        console.print(report.csv().rstrip("\n"))
    else:
        for line in report.lines():
            console.print(line)
    return exit_codes.OK
