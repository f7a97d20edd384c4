"""`aifabric config reload [--url URL] [--api-key KEY] [--json]`: a running gateway re-reads its fabric
file (every worker, every replica sharing its state), and this prints the diff it applied or the
problems that made it refuse (file, line, fix), then what each worker and replica did, waiting up to
--timeout seconds for all of them. Exit 0 applied everywhere, 1 refused (or not allowed) or any worker or
replica refused, runs other files or did not answer in time, 3 the gateway did not answer.
Registered by `cli.config_cmd` as the `reload` action of `aifabric config`.
"""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import add_gateway_arguments

__all__ = ["add_reload_parser", "run_reload"]


def add_reload_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "reload",
        help="ask a running gateway (all workers and replicas) to reload its fabric file",
        description="Ask a running gateway to re-read its fabric file and env file: prints the diff it "
        "applied, or every problem that made it refuse (the running configuration then stays), then what "
        "each worker and replica sharing its state did (waiting up to --timeout seconds for all). Exit 0 "
        "applied everywhere, 1 refused anywhere or not answered in time, 3 the gateway did not answer.",
    )
    add_gateway_arguments(
        parser,
        timeout=10.0,
        key_help="a key of gateway.admin_keys, needed when any key is set (default: $FABRIC_ADMIN_KEY, "
        "else $FABRIC_MASTER_KEY); without keys, loopback only",
        admin=True,
    )
    parser.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")


def run_reload(args: argparse.Namespace, console: Console) -> int:
    from aifabric.ops.config_reload import render_reload, request_reload

    answer = request_reload(args.url, api_key=args.api_key, timeout=args.timeout)
    if args.json:
        console.json(answer.to_dict())
        return answer.exit_code
    lines = render_reload(answer)
    for line in lines:
        (console.print if answer.exit_code == 0 else console.error)(line)
    return answer.exit_code
