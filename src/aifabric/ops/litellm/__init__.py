"""`aifabric config import litellm`: a LiteLLM proxy `config.yaml` -> a fabric file (and an env file).

    result = import_litellm("config.yaml", "fabric.yaml")      # reads, converts, writes both files
    result.plan.left_out                                       # what has no equivalent, by line

The parts: `source` reads the file keeping lines, `providers` knows what each LiteLLM provider is here,
`models` turns `model_list` into backends and roles, `settings` the router/litellm/general settings,
`render` writes the fabric file's text with comments, and this module writes the files. A literal
secret never reaches the fabric file: it goes to the env file (mode 0600) under a derived name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aifabric.core import exit_codes
from aifabric.errors import CommandError
from aifabric.ops.litellm.convert import convert
from aifabric.ops.litellm.plan import ImportPlan
from aifabric.ops.litellm.render import render
from aifabric.ops.litellm.source import read_source

__all__ = ["ImportResult", "import_litellm"]


@dataclass(frozen=True)
class ImportResult:
    plan: ImportPlan
    out: Path
    env_file: Path | None  # written (or updated) only when there were secrets to put in it
    text: str  # the fabric file as written


def import_litellm(config: str, out: str, env_file: str | None = None) -> ImportResult:
    """Import the LiteLLM config at `config` into the fabric file `out` (replaced if it exists). Secrets
    and `environment_variables` go to `env_file` (default: `out` with the suffix `.env`), which keeps
    its other lines; missing directories are made. Raises `CommandError`: exit 2 when `config` cannot be
    read or a file cannot be written, 1 when nothing in it could become a role (no file is written then)."""
    if Path(out).resolve() == Path(config).resolve():
        raise CommandError(
            f"{out}: that is the LiteLLM config itself; write the fabric file elsewhere (--out)",
            exit_codes.USAGE,
        )
    plan = convert(read_source(config), config)
    if not plan.roles:
        reasons = "".join(f"\n  line {f.line}: {f.key}: {f.why}" for f in plan.left_out)
        raise CommandError(
            f"{config}: no model_list entry could become a role; nothing written{reasons}", exit_codes.FAILED
        )
    out_path = Path(out)
    env_path: Path | None = None
    reference: str | None = None
    if plan.secrets or plan.env_vars:
        env_path = Path(env_file) if env_file else out_path.with_suffix(".env")
        reference = _relative(env_path, out_path.parent)
    text = render(plan, reference)
    try:
        # Missing directories are made, as `deploy kubernetes --out` makes its own.
        for path in (env_path, out_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        if env_path is not None:
            _write_env(env_path, plan)
        out_path.write_text(text, encoding="utf-8")
    except OSError as exc:
        # Exit 2, not 1: 1 says "written, with parts left out", and nothing usable was written here.
        where = exc.filename or out_path
        raise CommandError(f"cannot write {where}: {exc.strerror or exc}", exit_codes.UNWRITABLE) from None
    return ImportResult(plan, out_path, env_path, text)


def _relative(path: Path, base: Path) -> str:
    """How the fabric file names its env file: relative to the fabric file's directory when inside it."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _write_env(path: Path, plan: ImportPlan) -> None:
    values = {name: value for name, (value, _) in plan.env_vars.items()}
    values.update({name: secret.value for name, secret in plan.secrets.items()})
    kept: list[str] = []
    if path.exists():  # the operator's other variables stay; the import's own are replaced
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _key(line) not in values]
    lines = kept or [f"# secrets of the aifabric fabric file imported from {plan.source}; keep it mode 0600"]
    lines += [f"{name}={_quote(value)}" for name, value in values.items()]
    # Created 0600 from the start (never readable by others, not even for a moment); an existing file's
    # mode is tightened too.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("\n".join(lines) + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _key(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    key = stripped.split("=", 1)[0].strip()
    return key.removeprefix("export ").strip()


def _quote(value: str) -> str:
    """A value as the env-file reader takes it back unchanged (config.env's rules)."""
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
