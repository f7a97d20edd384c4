"""`aifabric wake HOST [--config FILE] [--json]`: wake a sleeping host by hand, as the gateway would.

Sends the host's Wake-on-LAN magic packet (`hosts.HOST.wake: {mac, broadcast, port}`) or runs its wake
command (`wake: {command: ...}`) once, and says what it did. Exit 0 sent, 1 the send failed, 2 no such
host or no `wake:` for it.
"""

from __future__ import annotations

import argparse
import asyncio

from aifabric.cli.console import Console
from aifabric.config.defaults import load_config_or_default
from aifabric.core import exit_codes
from aifabric.errors import CommandError
from aifabric.health.power import wake_host

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "wake"
HELP = "Wake a sleeping host of the fabric file: its Wake-on-LAN packet or wake command (exit 0/1/2)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", metavar="HOST", help="a host of the fabric file (hosts.HOST)")
    parser.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")


def run(args: argparse.Namespace, console: Console) -> int:
    config = load_config_or_default(args.config)
    host = config.hosts.get(args.host)
    if host is None:
        known = ", ".join(config.hosts) or "none"
        raise CommandError(
            f"no host named {args.host!r} in {config.source} (hosts: {known})", exit_codes.USAGE
        )
    if host.wake is None:
        raise CommandError(
            f"host {host.name!r} has no wake: section in {config.source}; add "
            'wake: {mac: "aa:bb:cc:dd:ee:ff", broadcast: BROADCAST} or wake: {command: "..."} '
            "(and always_on: false)",
            exit_codes.USAGE,
        )
    how = asyncio.run(wake_host(host))
    if args.json:
        console.json({"host": host.name, "woken": True, "how": how})
    else:
        console.print(f"woke {host.name}: {how}")
    return exit_codes.OK
