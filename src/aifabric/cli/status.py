"""`aifabric status [--url URL] [--json]`: the live view of a running gateway (see aifabric.ops.status).

Exit 0 all up, 1 degraded/loading/asleep, 2 a backend down or mismatched, 3 the gateway unreachable
(the runbook's CRITICAL "gateway down").
"""

from __future__ import annotations

import argparse
import os

from aifabric.cli.console import Console

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "status"
HELP = "Live view of a running gateway: backends, targets, alerts (exit 0/1/2, 3 gateway unreachable)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("AIFABRIC_URL", "http://127.0.0.1:8000"),
        help="the gateway (default: $AIFABRIC_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FABRIC_MASTER_KEY"),
        help="a key of gateway.api_keys, sent if given (the health routes do not need one)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--json", action="store_true", help="print what the gateway answered as JSON")


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.ops.status import gateway_status, render_status

    status = gateway_status(args.url, timeout=args.timeout, api_key=args.api_key)
    if args.json:
        console.json(status.to_dict())
    else:
        for line in render_status(status):
            console.print(line)
    return status.exit_code
