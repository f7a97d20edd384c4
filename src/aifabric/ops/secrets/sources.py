"""Read the values a secrets map names: the environment, files, commands and Azure Key Vault.

    values, failures = read_sources(secrets_map, environ=os.environ)

Every entry is read even after one fails, so one run lists every failure. A failure says which variable,
which source and why in words; never a value (a command's error output is not echoed either: it may hold
one). Key Vault goes through Microsoft's SDK (`azure-keyvault-secrets` + `azure-identity`, the `azure`
extra), imported only when the map has Key Vault entries; its credential is `DefaultAzureCredential`
(environment, workload or managed identity, `az login`) unless one is given.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifabric.ops.secrets.smap import MapEntry, SecretsMap

__all__ = ["COMMAND_TIMEOUT", "SourceFailure", "read_keyvault", "read_sources"]

COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class SourceFailure:
    """A variable whose source could not give a value."""

    entry: MapEntry
    why: str

    def __str__(self) -> str:
        return f"{self.entry.name} ({self.entry.kind}: {self.entry.ref}): {self.why}"


def read_sources(
    secrets_map: SecretsMap,
    *,
    environ: Mapping[str, str],
    credential: Any = None,
    client_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], list[SourceFailure]]:
    """The value of every entry, and the entries that failed. `credential` and `client_options` go to
    Key Vault's `SecretClient` (tests point it at a stand-in with its own CA)."""
    values: dict[str, str] = {}
    failures: list[SourceFailure] = []
    vault_entries = [e for e in secrets_map.entries if e.kind == "keyvault"]
    if vault_entries and secrets_map.vault is not None:
        got, failed = read_keyvault(
            secrets_map.vault, vault_entries, credential=credential, client_options=client_options
        )
        values.update(got)
        failures.extend(failed)
    for entry in secrets_map.entries:
        if entry.kind == "keyvault":
            continue
        try:
            value = _read_one(entry, environ, secrets_map.base_dir)
        except _Failed as exc:
            failures.append(SourceFailure(entry, str(exc)))
            continue
        values[entry.name] = value
    for name, value in list(values.items()):
        if "\0" in value:
            entry = next(e for e in secrets_map.entries if e.name == name)
            failures.append(SourceFailure(entry, "the value holds a NUL byte, which an env file cannot"))
            del values[name]
    return values, failures


class _Failed(Exception):
    pass


def _read_one(entry: MapEntry, environ: Mapping[str, str], base_dir: Path) -> str:
    if entry.kind == "env":
        value = environ.get(entry.ref)
        if not value:
            raise _Failed("not set in the environment" if value is None else "empty in the environment")
        return value
    if entry.kind == "file":
        path = base_dir / Path(entry.ref).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _Failed(f"{path} does not exist") from None
        except OSError as exc:
            raise _Failed(f"{path} cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise _Failed(f"{path} is not UTF-8 text") from None
        value = text.rstrip("\r\n")  # `echo secret > file` adds a newline that is not the secret's
        if not value:
            raise _Failed(f"{path} is empty")
        return value
    return _run(entry.ref)


def _run(command: str) -> str:
    try:
        done = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _Failed(f"the command did not finish in {COMMAND_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise _Failed(f"the command cannot be started: {exc.strerror}") from None
    if done.returncode != 0:
        # Its stderr is not shown: a failing `az ... --query value` may print part of what it read.
        how = f"exit status {done.returncode}" if done.returncode > 0 else f"signal {-done.returncode}"
        raise _Failed(f"the command failed ({how}); run it by hand to see why")
    try:
        value = done.stdout.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _Failed("the command printed something that is not UTF-8 text") from None
    if not value:
        raise _Failed("the command printed nothing")
    return value


def read_keyvault(
    vault: str,
    entries: list[MapEntry],
    *,
    credential: Any = None,
    client_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], list[SourceFailure]]:
    """The current version of each entry's secret in `vault`, through the Azure SDK."""
    try:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
        )
        from azure.keyvault.secrets import SecretClient
    except ImportError:
        why = "Key Vault needs the Azure SDK: pip install 'aifabric[azure]'"
        return {}, [SourceFailure(e, why) for e in entries]
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    values: dict[str, str] = {}
    failures: list[SourceFailure] = []
    with SecretClient(vault, credential, **dict(client_options or {})) as client:
        for entry in entries:
            try:
                secret = client.get_secret(entry.ref)
            except ResourceNotFoundError:
                failures.append(SourceFailure(entry, f"no secret {entry.ref!r} in {vault}"))
                continue
            except ClientAuthenticationError as exc:
                why = f"authentication failed: {_first_line(exc.message)}"
                failures.append(SourceFailure(entry, why))
                continue
            except ServiceRequestError as exc:
                failures.append(SourceFailure(entry, f"cannot reach {vault}: {_first_line(exc.message)}"))
                continue
            except HttpResponseError as exc:
                code = exc.error.code if exc.error is not None else None
                failures.append(
                    SourceFailure(
                        entry, f"{vault} answered {exc.status_code}" + (f" ({code})" if code else "")
                    )
                )
                continue
            if secret.properties.enabled is False or not secret.value:
                failures.append(SourceFailure(entry, f"secret {entry.ref!r} is disabled or empty"))
                continue
            values[entry.name] = secret.value
    return values, failures


def _first_line(message: object) -> str:
    text = str(message or "").strip()
    return text.splitlines()[0][:300] if text else "no details"
