"""`aifabric config import litellm CONFIG.yaml [--out fabric.yaml] [--env-file PATH] [--json]`.

Registered by `cli.config_cmd` as the `import` action of `aifabric config`. Exit 0: everything in the
LiteLLM file was carried; 1: the fabric file is written, but parts had no equivalent (listed with
their lines); 2: the LiteLLM file cannot be read (printed by `cli.main`, with its line).
"""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console
from aifabric.core import exit_codes
from aifabric.ops.litellm import ImportResult, import_litellm
from aifabric.ops.litellm.plan import Finding

__all__ = ["add_import_parser", "run_import"]


def add_import_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "import",
        help="turn another gateway's config (LiteLLM's config.yaml) into a fabric file",
        description="Turn another gateway's config into a fabric file.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    litellm = formats.add_parser(
        "litellm",
        help="a LiteLLM proxy config.yaml",
        description="Turn a LiteLLM proxy config.yaml into a fabric file: model_list into backends and "
        "roles, fallbacks, aliases, master key, retries and timeouts; literal secrets into an env file "
        "(mode 0600). Exit 0 when everything was carried, 1 when parts were left out (listed with their "
        "lines; the file is still written), 2 when the config cannot be read or the result cannot be "
        "written (missing directories of --out and --env-file are made).",
    )
    litellm.add_argument("config", metavar="CONFIG.yaml", help="the LiteLLM config to import")
    litellm.add_argument(
        "--out", default="fabric.yaml", help="the fabric file to write (default: fabric.yaml)"
    )
    litellm.add_argument(
        "--env-file",
        metavar="PATH",
        help="where literal secrets go (default: the fabric file's name with .env); other lines are kept",
    )
    litellm.add_argument("--json", action="store_true", help="print the report as JSON")


def run_import(args: argparse.Namespace, console: Console) -> int:
    result = import_litellm(args.config, args.out, args.env_file)
    if args.json:
        console.json(report(result))
    else:
        _print(result, console)
    return exit_codes.OK if result.plan.complete else exit_codes.ATTENTION


def report(result: ImportResult) -> dict[str, object]:
    """The report as data (`--json`): never a secret's value."""
    plan = result.plan
    return {
        "source": plan.source,
        "out": str(result.out),
        "complete": plan.complete,
        "env_file": str(result.env_file) if result.env_file else None,
        "roles": list(plan.roles),
        "aliases": dict((alias, role) for alias, (role, _) in plan.aliases.items()),
        "backends": {name: {"kind": b.kind, "url": b.url} for name, b in plan.backends.items()},
        "secrets": [{"name": s.name, "line": s.line, "key": s.key} for s in plan.secrets.values()],
        "env_vars": list(plan.env_vars),
        "needs_env": sorted(plan.needs),
        "notes": [f.to_dict() for f in plan.notes],
        "left_out": [f.to_dict() for f in plan.left_out],
    }


def _print(result: ImportResult, console: Console) -> None:
    plan = result.plan
    console.print(
        f"wrote {result.out}: {_count(len(plan.backends), 'backend')}, {_count(len(plan.roles), 'role')}, "
        f"{_count(len(plan.aliases), 'alias', 'aliases')} from {plan.source}"
    )
    if result.env_file is not None:
        console.print(
            f"wrote {result.env_file} (mode 0600), which the fabric file names as gateway.env_file:"
        )
        for secret in plan.secrets.values():
            console.print(
                f"  line {secret.line}: {secret.key}: a literal secret, moved there as {secret.name}"
            )
        if plan.env_vars:
            console.print(f"  environment_variables: {', '.join(plan.env_vars)}")
    if plan.needs:
        console.print("needs from the environment (or the env file): " + ", ".join(sorted(plan.needs)))
    _findings(console, "changed on the way", plan.notes)
    _findings(console, "left out (no aifabric equivalent)", plan.left_out)
    console.print(f"next: aifabric config validate {result.out} && aifabric serve --config {result.out}")


def _findings(console: Console, title: str, findings: list[Finding]) -> None:
    if not findings:
        return
    console.print(f"{title} ({len(findings)}):")
    for finding in findings:
        where = f"line {finding.line}: " if finding.line else ""
        console.print(f"  {where}{finding.key}: {finding.why}")


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
