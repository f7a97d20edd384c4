"""`aifabric secrets sync`: fill the env file from the secrets map's sources (the runbook's
`ansible-playbook playbooks/secrets-sync.yml`).

    result = sync_secrets(load_secrets_map("secrets-map.yml"), Path(".env"), environ=os.environ)
    result.failures        # a source failed: nothing was written
    result.changes         # added / changed / removed names

The map is the whole env file: a variable of the file that the map does not name is removed (reported
by name). Nothing is written when any source fails, or with `dry_run`, or when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifabric.config.env import parse_env_file
from aifabric.errors import CommandError
from aifabric.ops.secrets.envwrite import Changes, diff_values, write_env_file
from aifabric.ops.secrets.smap import SecretsMap
from aifabric.ops.secrets.sources import SourceFailure, read_sources

__all__ = ["SyncResult", "sync_secrets"]


@dataclass(frozen=True)
class SyncResult:
    env_file: Path
    changes: Changes
    failures: list[SourceFailure]
    written: bool


def sync_secrets(
    secrets_map: SecretsMap,
    env_file: Path,
    *,
    environ: Mapping[str, str],
    dry_run: bool = False,
    credential: Any = None,
    client_options: Mapping[str, Any] | None = None,
) -> SyncResult:
    """Read every source, then (unless one failed or `dry_run`) replace `env_file` when it differs."""
    values, failures = read_sources(
        secrets_map, environ=environ, credential=credential, client_options=client_options
    )
    try:
        old, errors = parse_env_file(env_file)
    except FileNotFoundError:
        old, errors = {}, []
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CommandError(f"cannot read the env file {env_file}: {why}") from None
    ordered = {e.name: values[e.name] for e in secrets_map.entries if e.name in values}
    changes = diff_values(old, ordered)
    if failures:
        return SyncResult(env_file, changes, failures, written=False)
    # Lines the parser could not read are not carried over: say so by rewriting the file anyway.
    needed = changes.any or bool(errors)
    if dry_run or not needed:
        return SyncResult(env_file, changes, failures, written=False)
    header = f"written by `aifabric secrets sync` from {secrets_map.source}; edit the map, not this file"
    try:
        write_env_file(env_file, ordered, header)
    except OSError as exc:
        raise CommandError(f"cannot write the env file {env_file}: {exc.strerror or exc}") from None
    return SyncResult(env_file, changes, failures, written=True)
