"""The check "env file": the gateway.env_file exists, is not readable by others, has KEY=VALUE lines."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from aifabric.config.env import parse_env_file
from aifabric.config.schema import FabricConfig
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["env_file_checks"]


def env_file_checks(config: FabricConfig) -> list[Check]:
    env_file = config.gateway.env_file
    if not env_file:
        return []
    lines = config.loaded.key_lines
    where = f"{config.source}:{lines['gateway.env_file']}" if "gateway.env_file" in lines else config.source
    path = Path(os.path.abspath(env_file))  # as the fix commands need it, wherever they are run
    try:
        st = path.stat()
    except FileNotFoundError:
        return [
            Check(
                "env file",
                Verdict.WARN,
                f"{path} (gateway.env_file, {where}) does not exist; "
                "every ${VAR} came from the environment",
                f"create {path} with KEY=VALUE lines and `chmod 600 {path}`, or remove gateway.env_file",
            )
        ]
    except OSError as exc:
        return [Check("env file", Verdict.FAIL, f"{path} cannot be examined: {exc.strerror}", "")]
    if not stat.S_ISREG(st.st_mode):
        return [Check("env file", Verdict.FAIL, f"{path} is not a regular file", f"point {where} at a file")]
    try:
        values, errors = parse_env_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return [
            Check(
                "env file",
                Verdict.FAIL,
                f"{path} cannot be read: {why}",
                f"check its owner and mode: `ls -l {path}`; the gateway must be able to read it",
            )
        ]
    mode = stat.S_IMODE(st.st_mode)
    checks = []
    if mode & 0o077:
        checks.append(
            Check(
                "env file",
                Verdict.WARN,
                f"{path} holds secrets but is readable by {'others' if mode & 0o007 else 'its group'} "
                f"(mode {mode:04o})",
                f"chmod 600 {path}",
            )
        )
    if errors:
        checks.append(
            Check(
                "env file lines",
                Verdict.WARN,
                f"{len(errors)} line(s) of {path} are not KEY=VALUE and are ignored",
                "write KEY=VALUE (or export KEY=VALUE); quote values with spaces or '#'",
                tuple(f"{path}:{e.line}: {e.message}" for e in errors),  # never the line itself
            )
        )
    if not values:
        checks.append(
            Check("env file", Verdict.WARN, f"{path} defines no variables", f"add KEY=VALUE lines to {path}")
        )
    if not checks:
        checks.append(Check("env file", Verdict.PASS, f"{path}: {len(values)} variable(s), mode {mode:04o}"))
    return checks
