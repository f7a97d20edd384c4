"""The check "log dir": the directory `aifabric up` writes its local backends' logs to is writable."""

from __future__ import annotations

import os
from pathlib import Path

from aifabric.config.schema import FabricConfig
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["log_dir_check", "log_dir_checks"]


def log_dir_check(directory: Path) -> Check:
    """Whether the service can write its logs in `directory`, or create it."""
    name = "log dir"
    if directory.exists():
        if not directory.is_dir():
            return Check(name, Verdict.FAIL, f"{directory} exists and is not a directory", "")
        if os.access(directory, os.W_OK | os.X_OK):
            return Check(name, Verdict.PASS, f"{directory} is writable")
        return Check(
            name,
            Verdict.FAIL,
            f"{directory} is not writable by this user",
            f"give the service's user write access: `chown USER {directory}`, or change the log dir",
        )
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if os.access(parent, os.W_OK | os.X_OK):
        return Check(name, Verdict.PASS, f"{directory} does not exist yet and will be created")
    return Check(
        name,
        Verdict.FAIL,
        f"{directory} does not exist and this user cannot create it ({parent} is not writable)",
        f"install -d -m 0750 -o USER {directory}",
    )


def log_dir_checks(config: FabricConfig) -> list[Check]:
    """The log dir `aifabric up` writes each local backend's log to (monitoring.log_dir, else its default)."""
    from aifabric.local.launch import local_backends

    if config.monitoring.log_dir:
        directory = Path(config.monitoring.log_dir).expanduser()
    elif local_backends(config):
        from aifabric.local.launch import default_log_dir

        directory = default_log_dir(config)
    else:
        return []
    return [log_dir_check(Path(os.path.abspath(directory)))]
