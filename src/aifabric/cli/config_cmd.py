"""`aifabric config validate FILE`, `aifabric config show FILE [--json]`, and `aifabric config import`
(in `cli.config_import`), `config diff` (in `cli.config_diff`), `config reload` (in `cli.config_reload`).

Without FILE, both act on the embedded default (what `aifabric up` serves with no fabric file).
validate: exit 0 with a one-line summary, or exit 1 with every problem on stderr (printed by
`cli.main`, the one place a `ConfigError` becomes output and an exit status).
show: the effective configuration, defaults filled in and secrets redacted, as YAML or JSON.
"""

from __future__ import annotations

import argparse

import yaml

from aifabric.cli.config_diff import add_diff_parser, run_diff
from aifabric.cli.config_import import add_import_parser, run_import
from aifabric.cli.config_reload import add_reload_parser, run_reload
from aifabric.cli.console import Console
from aifabric.config.defaults import load_config_or_default
from aifabric.config.schema import FabricConfig
from aifabric.config.show import config_to_dict
from aifabric.core import exit_codes

__all__ = ["HELP", "NAME", "add_arguments", "run", "summary"]

NAME = "config"
HELP = "Check a fabric file, or print the effective configuration it describes."


_FILE_HELP = "the fabric file (default: the embedded default that `aifabric up` serves)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = actions.add_parser(
        "validate",
        help="check a fabric file; exit 0 if it is usable, 1 with every problem otherwise",
        description="Check a fabric file: YAML, keys, types, references, ${VAR} resolution.",
    )
    validate.add_argument("file", metavar="FILE", nargs="?", help=_FILE_HELP)
    show = actions.add_parser(
        "show",
        help="print the effective configuration (defaults filled in, secrets redacted)",
        description="Print the effective configuration: every default filled in, every secret redacted.",
    )
    show.add_argument("file", metavar="FILE", nargs="?", help=_FILE_HELP)
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    add_import_parser(actions)
    add_diff_parser(actions)
    add_reload_parser(actions)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.action == "import":
        return run_import(args, console)
    if args.action == "diff":
        return run_diff(args, console)
    if args.action == "reload":
        return run_reload(args, console)
    # A ConfigError is printed by cli.main, problem by problem.
    config = load_config_or_default(args.file)
    if args.action == "validate":
        console.print(f"ok: {summary(config)}")
        return exit_codes.OK
    data = config_to_dict(config)
    if args.json:
        console.json(data)
    else:
        console.print(f"# effective configuration of {config.source}; secrets redacted")
        console.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100).rstrip("\n"))
    return exit_codes.OK


def summary(config: FabricConfig) -> str:
    """`3 hosts, 4 backends, 4 roles, 3 aliases`."""
    counts = (
        (len(config.hosts), "host", "hosts"),
        (len(config.backends), "backend", "backends"),
        (len(config.roles), "role", "roles"),
        (len(config.aliases), "alias", "aliases"),
    )
    return ", ".join(f"{count} {one if count == 1 else many}" for count, one, many in counts)
