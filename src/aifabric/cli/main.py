"""`aifabric` command line: one module per subcommand, errors turned into exit codes in one place."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from aifabric.cli.console import Console
from aifabric.core import exit_codes
from aifabric.errors import CommandError, ConfigError, FabricError

__all__ = ["main"]

# Each module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args, console) -> int`.
COMMANDS = (
    "serve",
    "up",
    "config_cmd",
    "health",
    "smoke",
    "doctor",
    "status",
    "deploy",
    "drill",
    "secrets",
    "keys",
    "usage",
    "wake",
)


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, console: Console) -> int: ...


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(
        prog="aifabric",
        description="One OpenAI-compatible gateway in front of your inference servers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, Command] = {}
    for module_name in COMMANDS:
        module: Command = importlib.import_module(f"aifabric.cli.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        commands[module.NAME] = module
    return parser, commands


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    console = console or Console()
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return exit_codes.USAGE
    try:
        return commands[args.command].run(args, console)
    except ConfigError as exc:
        console.error(f"configuration error ({len(exc.problems)} problem(s)):")
        for problem in exc.problems:
            console.error(str(problem))
        return exit_codes.FAILED
    except CommandError as exc:
        console.error(str(exc))
        return exc.exit_code
    except FabricError as exc:
        console.error(str(exc))
        return exit_codes.FAILED
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
