"""The key store's procedures, as `aifabric keys` runs them: create, update, list, revoke, rotate.

Each takes the store and the wall clock, and raises `CommandError` with the fix in words for an
operator's mistake (a taken name, an unknown one). The key itself is returned by `create` and
`rotate` only, for the command to print once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from aifabric.errors import CommandError
from aifabric.tenancy.keys import KeyRecord, hash_key, new_key
from aifabric.tenancy.keystore import KeyStore
from aifabric.tenancy.principal import Budget, Priority

__all__ = ["DEFAULT_GRACE", "KeySpec", "create_key", "revoke_key", "rotate_key", "update_key"]

DEFAULT_GRACE = 24 * 3600.0  # seconds a rotated key keeps working


@dataclass(frozen=True)
class KeySpec:
    """What `keys create` was asked for (`keys update` changes the same settings but the name and
    scope)."""

    name: str
    roles: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget: Budget | None = None
    priority: Priority = Priority.INTERACTIVE
    expires: float | None = None
    admin: bool = False


def create_key(store: KeyStore, spec: KeySpec, now: float) -> tuple[str, KeyRecord]:
    key = new_key()
    record = KeyRecord(
        name=spec.name,
        key_hash=hash_key(key),
        prefix=key[:8],
        created=now,
        roles=spec.roles,
        rpm=spec.rpm,
        tpm=spec.tpm,
        concurrency=spec.concurrency,
        budget_amount=spec.budget.amount if spec.budget else None,
        budget_period=spec.budget.period.value if spec.budget else None,
        priority=spec.priority.value,
        expires=spec.expires,
        admin=spec.admin,
    )
    if not store.put(record, create=True):
        raise CommandError(
            f"a key named '{spec.name}' exists already: choose another name, "
            f"or `aifabric keys rotate {spec.name}` for a new key with the same settings"
        )
    return key, record


def _existing(store: KeyStore, name: str) -> KeyRecord:
    record = store.get(name)
    if record is None:
        raise CommandError(f"no key named '{name}': `aifabric keys list` shows the names")
    return record


def revoke_key(store: KeyStore, name: str, now: float) -> KeyRecord:
    """The key (and a rotated predecessor still in its grace period) stops working at once."""
    record = _existing(store, name)
    if record.revoked is not None:
        return record
    revoked = replace(record, revoked=now, previous_hash=None, previous_until=None)
    store.put(revoked)
    return revoked


def rotate_key(store: KeyStore, name: str, now: float, grace: float = DEFAULT_GRACE) -> tuple[str, KeyRecord]:
    """A new key with the same settings; the old one keeps working for `grace` seconds."""
    record = _existing(store, name)
    if record.revoked is not None:
        raise CommandError(
            f"the key '{name}' is revoked: a revoked key is not brought back; create a new one"
        )
    key = new_key()
    rotated = record.rotated(hash_key(key), key[:8], grace, now)
    store.put(rotated)
    return key, rotated


_SETTINGS = frozenset(f.name for f in fields(KeySpec)) - {"name", "admin"}


def update_key(store: KeyStore, name: str, changes: Mapping[str, Any]) -> KeyRecord:
    """The same key with some settings changed (KeySpec's field names; None lifts a limit, a budget,
    an expiry or the roles restriction). Running gateways read it with the next store version."""
    unknown = set(changes) - _SETTINGS
    if unknown:
        raise ValueError(f"not a key setting: {', '.join(sorted(unknown))}")
    record = _existing(store, name)
    if record.revoked is not None:
        raise CommandError(
            f"the key '{name}' is revoked: a revoked key is not brought back; create a new one"
        )
    new: dict[str, Any] = {k: v for k, v in changes.items() if k not in ("budget", "priority")}
    if "budget" in changes:
        budget: Budget | None = changes["budget"]
        new["budget_amount"] = budget.amount if budget else None
        new["budget_period"] = budget.period.value if budget else None
    if "priority" in changes:
        new["priority"] = Priority(changes["priority"]).value
    updated = replace(record, **new)
    store.put(updated)
    return updated
