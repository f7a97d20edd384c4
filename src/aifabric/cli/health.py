"""`aifabric health [BACKEND] [--config FILE] [--json]`: the runbook's check_vllm_backends.sh.

Probes every backend of the fabric file (or one) directly, the way the gateway's health checker
does, and prints state and why, probe latency, served model ids against the config, load signals.
Exit 0 all up, 1 degraded/loading/asleep, 2 a backend down or serving other model ids.
"""

from __future__ import annotations

import argparse
import asyncio

from aifabric.cli.console import Console
from aifabric.config.defaults import load_config_or_default
from aifabric.core import exit_codes
from aifabric.errors import CommandError
from aifabric.health.checker import probe_backends
from aifabric.health.report import exit_status, health_view, render_table

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "health"
HELP = "Probe the backends of a fabric file: state and why, latency, model ids, load (exit 0/1/2)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backend", nargs="?", metavar="BACKEND", help="one backend (default: all)")
    parser.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
    parser.add_argument("--json", action="store_true", help="print the health view as JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per-request probe timeout (default: each backend's health.timeout)",
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="check a running gateway instead: its liveness and active alerts; down is CRITICAL, "
        "notified once to the --config file's sinks (run it from cron on another machine)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    if args.gateway:
        return _check_gateway(args, console)
    config = load_config_or_default(args.config)
    names = list(config.backends)
    if args.backend is not None:
        if args.backend not in config.backends:
            known = ", ".join(names) or "none"
            raise CommandError(
                f"no backend named {args.backend!r} in {config.source} (backends: {known})",
                exit_code=exit_codes.USAGE,
            )
        names = [args.backend]
    healths = asyncio.run(probe_backends(config, names, args.timeout))
    view = health_view(healths, config)
    if args.json:
        console.json(view)
    else:
        for line in render_table(view):
            console.print(line)
    return exit_status(healths)


def _check_gateway(args: argparse.Namespace, console: Console) -> int:
    """`--gateway URL`: the runbook's "LiteLLM down: CRITICAL", which a gateway cannot raise itself."""
    from aifabric.alerts.monitor import watch_gateway

    config = load_config_or_default(args.config) if args.config else None
    check = asyncio.run(watch_gateway(args.gateway, config, timeout=args.timeout or 5.0))
    if args.json:
        console.json(check.to_json())
    else:
        for line in check.lines():
            console.print(line)
    return check.exit_status
