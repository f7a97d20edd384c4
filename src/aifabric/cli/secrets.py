"""`aifabric secrets check [--config FILE] [--json]` and
`aifabric secrets sync --map secrets-map.yml [--env-file PATH] [--dry-run] [--json]`.

sync writes --env-file, else gateway.env_file of --config, else that of ./fabric.yaml, else ./.env.

check: exit 0 when every `${VAR}` resolves, 1 when one is missing or the env file cannot be read.
sync: exit 0 when the env file holds the map's values (written or already so), 1 when a source failed
(the file is left untouched). Names only, never a value, in either.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aifabric.cli.console import Console
from aifabric.config.defaults import default_config_path
from aifabric.core import exit_codes
from aifabric.errors import CommandError
from aifabric.ops.secrets import SecretsReport, check_secrets, load_secrets_map, sync_secrets
from aifabric.ops.secrets.check import env_file_of

__all__ = ["HELP", "NAME", "add_arguments", "run"]

DEFAULT_FABRIC_FILE = "fabric.yaml"  # where `config import` writes, and the unit's working directory holds
DEFAULT_ENV_FILE = ".env"  # the runbook's name for the gateway's env file

NAME = "secrets"
HELP = "Where each ${VAR} of the fabric file comes from; fill the env file from a secrets map."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="every ${VAR} of the fabric file and where it resolves from; the env file's mode and owner",
        description="Every ${VAR} of the fabric file: environment, env file or missing. Never a value.",
    )
    check.add_argument("--config", metavar="FILE", help="the fabric file (default: the embedded default)")
    check.add_argument("--json", action="store_true", help="print JSON")
    sync = actions.add_parser(
        "sync",
        help="fill the env file from the map's sources (env, file, command, Azure Key Vault)",
        description="Fill the env file from a secrets map; prints the names added, changed and removed.",
    )
    sync.add_argument("--map", required=True, metavar="FILE", help="the secrets map (secrets-map.yml)")
    sync.add_argument(
        "--env-file",
        metavar="PATH",
        help="the env file to write (default: gateway.env_file of --config, else of ./fabric.yaml, "
        "else ./.env)",
    )
    sync.add_argument("--config", metavar="FILE", help="the fabric file whose gateway.env_file to fill")
    sync.add_argument("--dry-run", action="store_true", help="read every source, say what would change")
    sync.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, console: Console) -> int:
    if args.action == "check":
        report = check_secrets(args.config or default_config_path(), environ=os.environ)
        if args.json:
            console.json(report.to_dict())
        else:
            _print_check(report, console)
        return report.exit_code
    return _sync(args, console)


def _print_check(report: SecretsReport, console: Console) -> None:
    env = report.env_file
    if env is None:
        console.print(f"{report.source}: no gateway.env_file; ${{VAR}} resolve from the environment only")
    elif env.exists:
        console.print(
            f"env file {env.path}: mode {env.mode}, owner {env.owner}:{env.group}, "
            f"{env.variables} variable(s)"
        )
    else:
        console.print(f"env file {env.path}: " + (env.error or "does not exist"))
    if env is not None and env.error and env.exists:
        console.print(f"  FAIL {env.error}")
    for warning in env.warnings if env is not None else []:
        console.print(f"  WARN {warning}")
    if not report.references:
        console.print(f"{report.source}: no ${{VAR}} references")
        return
    width = max(len(r.name) for r in report.references) + 3
    for ref in report.references:
        console.print(f"{'${' + ref.name + '}':<{width}} {ref.source:<12} {', '.join(ref.used_at)}")
        if ref.note:
            console.print(f"{'':<{width}} {'':<12} {ref.note}")
    missing = report.missing
    if missing:
        console.print(
            f"{len(missing)} of {len(report.references)} missing: {', '.join(r.name for r in missing)}"
        )
    else:
        console.print(f"all {len(report.references)} resolve")


def _sync(args: argparse.Namespace, console: Console) -> int:
    secrets_map = load_secrets_map(args.map)
    env_file = _target(args, console)
    result = sync_secrets(secrets_map, env_file, environ=os.environ, dry_run=args.dry_run)
    changes = result.changes
    if args.json:
        console.json(
            {
                "env_file": str(result.env_file),
                "added": changes.added,
                "changed": changes.changed,
                "removed": changes.removed,
                "unchanged": changes.unchanged,
                "failures": [
                    {"name": f.entry.name, "source": f.entry.kind, "line": f.entry.line, "why": f.why}
                    for f in result.failures
                ],
                "written": result.written,
                "dry_run": args.dry_run,
            }
        )
    if result.failures:
        if not args.json:
            console.error(f"{len(result.failures)} source(s) failed; {env_file} is left as it was:")
            for failure in result.failures:
                console.error(f"  {secrets_map.source}:{failure.entry.line}: {failure}")
        return exit_codes.FAILED
    if args.json:
        return exit_codes.OK
    for label, names in (
        ("added", changes.added),
        ("changed", changes.changed),
        ("removed", changes.removed),
    ):
        if names:
            console.print(f"{label}: {', '.join(names)}")
    if args.dry_run:
        console.print(f"dry run: {env_file} not written ({len(changes.unchanged)} unchanged)")
    elif result.written:
        console.print(
            f"wrote {env_file} (mode 0600), {len(changes.unchanged)} unchanged; "
            "the gateway reads it on reload: systemctl reload aifabric, or aifabric config reload"
        )
    else:
        console.print(f"{env_file} is up to date ({len(changes.unchanged)} variable(s))")
    return exit_codes.OK


def _target(args: argparse.Namespace, console: Console) -> Path:
    """The env file to write: --env-file; else gateway.env_file of --config; else, with neither (the
    runbook's bare `secrets sync --map secrets-map.yml`, run where the gateway's files are), the
    gateway.env_file of ./fabric.yaml (the file `config import` writes) when it names one, else ./.env.
    Said on stderr when it was not named, so the operator sees which file changes."""
    if args.env_file:
        return Path(args.env_file)
    if args.config:
        env = env_file_of(args.config, os.environ)
        if env is not None:
            return env
        raise CommandError(
            f"{args.config} has no gateway.env_file: name the file to write with --env-file", exit_codes.USAGE
        )
    local = Path(DEFAULT_FABRIC_FILE)
    env = env_file_of(local, os.environ) if local.is_file() else None
    if env is not None:
        console.error(f"env file: {env} (gateway.env_file of ./{DEFAULT_FABRIC_FILE}; --env-file to choose)")
        return env
    console.error(
        f"env file: ./{DEFAULT_ENV_FILE} (no --env-file, --config or ./{DEFAULT_FABRIC_FILE} naming one)"
    )
    return Path(DEFAULT_ENV_FILE)
