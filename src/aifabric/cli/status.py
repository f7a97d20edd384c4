"""`aifabric status [--url URL] [--json]`: the live view of a running gateway (see aifabric.ops.status).

Exit 0 all up, 1 degraded/loading/asleep, 2 a backend down or mismatched, 3 the gateway unreachable
(the runbook's CRITICAL "gateway down").
"""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import add_gateway_arguments

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "status"
HELP = "Live view of a running gateway: backends, targets, alerts (exit 0/1/2, 3 gateway unreachable)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gateway_arguments(
        parser,
        timeout=10.0,
        key_help="a key of gateway.admin_keys, needed once the gateway has any key configured "
        "(default: $FABRIC_ADMIN_KEY, else $FABRIC_MASTER_KEY)",
        admin=True,
    )
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
