"""`aifabric smoke [--url URL] [--json]`: the runbook's end-to-end validation of a running gateway."""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import add_gateway_arguments
from aifabric.core import exit_codes

NAME = "smoke"
HELP = "End-to-end check of a running gateway: every role and alias answers (exit 0 all pass, 1 otherwise)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gateway_arguments(
        parser, timeout=60.0, key_help="a key of gateway.api_keys (default: $FABRIC_MASTER_KEY)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.ops.smoke import smoke

    report = smoke(args.url, api_key=args.api_key, timeout=args.timeout)
    if args.json:
        console.json(report.to_dict())
    else:
        console.print(f"smoke test of {report.gateway}")
        for c in report.checks:
            served = f" via {c.role}/{c.backend}" if c.backend else ""
            timing = f" {c.seconds * 1000:.0f} ms" if c.seconds else ""
            console.print(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<24} {c.detail}{served}{timing}")
        failed = sum(not c.ok for c in report.checks)
        total = len(report.checks)
        console.print(f"all {total} checks passed" if not failed else f"{failed} of {total} checks FAILED")
    return exit_codes.OK if report.ok else exit_codes.FAILED
