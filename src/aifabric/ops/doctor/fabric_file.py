"""The checks "fabric file" (it loads: every problem with file:line and its fix) and "secrets" (every
${VAR} resolves, and from where: a service started by systemd or compose has only the env file)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from aifabric.config.env import parse_env_file
from aifabric.config.load import load_config
from aifabric.config.schema import FabricConfig
from aifabric.errors import ConfigError, ProblemKind
from aifabric.ops.doctor.report import Check, DoctorReport, Verdict

__all__ = ["load"]

_PLACEHOLDER = "aifabric-doctor-unset"


def load(source: str, environ: Mapping[str, str], report: DoctorReport) -> FabricConfig | None:
    """Load the file, adding the "fabric file" and "secrets" checks to `report`. With only secrets
    missing, the config loaded with stand-ins for them (so the other checks still run); else None."""
    try:
        config = load_config(source, environ=environ)
    except ConfigError as exc:
        structural = [p for p in exc.problems if p.kind is not ProblemKind.ENV]
        env = [p for p in exc.problems if p.kind is ProblemKind.ENV]
        if structural:
            report.checks.append(
                Check(
                    "fabric file",
                    Verdict.FAIL,
                    f"{len(structural)} problem(s) in {source}, each with its fix",
                    "",
                    tuple(str(p) for p in structural),
                )
            )
        else:
            report.checks.append(_loaded(source, None))
        if env:
            report.checks.append(
                Check(
                    "secrets",
                    Verdict.FAIL,
                    f"{len(env)} ${{VAR}} reference(s) or env file line(s) cannot be used",
                    "",
                    tuple(str(p) for p in env),
                )
            )
        if structural:
            return None
        # Only secrets are missing: load again with stand-ins so the other checks still run.
        try:
            return load_config(source, environ=_StandIns(environ))
        except ConfigError:
            return None
    report.checks.append(_loaded(source, config))
    report.checks.append(_secrets_check(config, environ))
    return config


def _loaded(source: str, config: FabricConfig | None) -> Check:
    if config is None:
        return Check("fabric file", Verdict.PASS, f"{source} is valid apart from its secrets")
    summary = (
        f"{source} loads: {len(config.hosts)} hosts, {len(config.backends)} backends, "
        f"{len(config.roles)} roles, {len(config.aliases)} aliases"
    )
    return Check("fabric file", Verdict.PASS, summary)


class _StandIns(Mapping[str, str]):
    """An environment in which every variable is set (to a stand-in unless really set)."""

    def __init__(self, real: Mapping[str, str]) -> None:
        self._real = real

    def __getitem__(self, key: str) -> str:
        return self._real.get(key) or _PLACEHOLDER

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)


def _secrets_check(config: FabricConfig, environ: Mapping[str, str]) -> Check:
    """Every reference resolved (the loader says so); where each came from, which matters for a service:
    systemd and compose give it the env file, never the shell that ran this command."""
    refs = config.loaded.env_references  # name -> has a default somewhere (as the loader met them)
    if not refs:
        return Check("secrets", Verdict.PASS, "no ${VAR} references")
    env_file = config.gateway.env_file
    in_file: set[str] = set()
    if env_file:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            in_file = set(parse_env_file(env_file)[0])
    details, shell_only = [], []
    for name, has_default in refs.items():
        where = [w for w, ok in (("environment", name in environ), ("env file", name in in_file)) if ok]
        if not where and has_default:
            where = ["its default"]
        details.append(f"${{{name}}}: from {' and '.join(where)}")
        if where == ["environment"]:
            shell_only.append(name)
    summary = f"all {len(refs)} ${{VAR}} reference(s) resolve"
    if not shell_only:
        return Check("secrets", Verdict.PASS, summary, details=tuple(details))
    names = ", ".join(shell_only)
    fix = (
        f"add {names} to {env_file} (KEY=VALUE lines)"
        if env_file
        else f"set gateway.env_file to a file (mode 600) defining {names}"
    )
    return Check(
        "secrets",
        Verdict.WARN,
        f"{summary}, but {names} only from this shell's environment: a service started by systemd or "
        "compose will not have it",
        fix,
        tuple(details),
    )
