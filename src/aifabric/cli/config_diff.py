"""`aifabric config diff OLD NEW [--json]`: what a reload from OLD to NEW would change.

Registered by `cli.config_cmd` as the `diff` action of `aifabric config`. Both files are loaded as the
gateway would (env file and environment included), so a changed secret is seen, and said to have
changed, never shown. Exit 0: no difference; 1: differences (listed); a file that does not load is
reported by `cli.main` with file, line and fix.
"""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console
from aifabric.config.diff import ConfigDiff, diff_configs
from aifabric.config.load import load_config
from aifabric.core import exit_codes

__all__ = ["add_diff_parser", "print_diff", "run_diff"]


def add_diff_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "diff",
        help="roles, targets, backends, aliases and settings added, removed or changed between two files",
        description="What changes from OLD to NEW: roles, targets, backends, aliases, hosts, limits and "
        "settings; secrets are said to have changed, never shown. Exit 0 when nothing differs, 1 when "
        "something does.",
    )
    parser.add_argument("old", metavar="OLD", help="the fabric file as it is (e.g. the running one)")
    parser.add_argument("new", metavar="NEW", help="the fabric file as it will be")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run_diff(args: argparse.Namespace, console: Console) -> int:
    diff = diff_configs(load_config(args.old), load_config(args.new))
    if args.json:
        console.json(diff.to_dict())
    else:
        console.print(f"{args.old} -> {args.new}: {diff.summary()}")
        print_diff(diff, console)
    return exit_codes.ATTENTION if diff else exit_codes.OK


def print_diff(diff: ConfigDiff, console: Console, indent: str = "") -> None:
    for line in diff.lines():
        console.print(indent + line)
    if diff.secrets_changed:
        console.print(f"{indent}secrets changed: {', '.join(diff.secrets_changed)}")
