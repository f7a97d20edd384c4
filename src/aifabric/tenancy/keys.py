"""API keys of the key store: how one is made, what its record holds, and how a record reads as flags.

A key is `afk-` and 43 characters of `secrets.token_urlsafe(32)` (256 bits). The store keeps only its
sha256: with that much entropy a plain hash cannot be reversed, and the gateway finds a presented key
with one dict lookup by its hash (no per-key comparison loop, so no timing that depends on how many
keys there are or how close a guess came). The key itself is printed once, by `keys create` or
`keys rotate`, and never stored, logged or shown again; `keys list` shows its first 8 characters.

Rotation keeps the previous hash on the record until `previous_until`, so clients move over within a
grace period; revocation keeps the record (marked revoked) so that a store whose every key is revoked
still closes the gateway instead of opening it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aifabric.config.durations import parse_duration
from aifabric.tenancy.principal import Budget, BudgetPeriod, Principal, Priority

__all__ = [
    "KEY_PREFIX",
    "KeyRecord",
    "hash_key",
    "new_key",
    "parse_expiry",
    "validate_name",
]

KEY_PREFIX = "afk-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_RESERVED = ("master", "anonymous")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_name(name: str) -> str:
    """A key name as the ledger and the status page will show it; ValueError with the rule otherwise."""
    if not _NAME.match(name):
        raise ValueError(
            f"key name {name!r} is not valid: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    if name in _RESERVED:
        raise ValueError(f"key name {name!r} is reserved (it names requests without a stored key)")
    return name


def parse_expiry(text: str, now: float) -> float:
    """`2027-01-31`, `2027-01-31T18:00`, `2027-01-31T18:00+02:00` (UTC unless it says), or a duration
    from now (`30d`, `12h`): the epoch second the key stops working."""
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expiry {text!r} is neither a date (2027-01-31, 2027-01-31T18:00) nor a duration (30d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.timestamp()
    if stamp <= now:
        raise ValueError(f"expiry {text!r} is in the past")
    return stamp


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as stored: everything but the key itself."""

    name: str
    key_hash: str
    prefix: str  # the key's first 8 characters, to recognize it in `keys list`
    created: float  # epoch seconds
    roles: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget_amount: float | None = None
    budget_period: str | None = None  # a BudgetPeriod value
    priority: str = Priority.INTERACTIVE.value
    expires: float | None = None  # epoch seconds
    admin: bool = False
    revoked: float | None = None  # epoch seconds of `keys revoke`
    previous_hash: str | None = None  # the key `keys rotate` replaced, valid until previous_until
    previous_until: float | None = None

    @property
    def budget(self) -> Budget | None:
        if self.budget_amount is None or self.budget_period is None:
            return None
        return Budget(self.budget_amount, BudgetPeriod(self.budget_period))

    def principal(self) -> Principal:
        return Principal(
            name=self.name,
            roles=frozenset(self.roles) if self.roles is not None else None,
            priority=Priority(self.priority),
            rpm=self.rpm,
            tpm=self.tpm,
            concurrency=self.concurrency,
            budget=self.budget,
            admin=self.admin,
        )

    def status(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    def rotated(self, key_hash: str, prefix: str, grace: float, now: float) -> KeyRecord:
        return replace(
            self, key_hash=key_hash, prefix=prefix, previous_hash=self.key_hash, previous_until=now + grace
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("roles") is not None:
            known["roles"] = tuple(known["roles"])
        return cls(**known)

    def view(self, now: float) -> dict[str, Any]:
        """What `keys list` shows: no hash, no key; the first characters only, to recognize it."""
        return {
            "name": self.name,
            "prefix": self.prefix + "...",
            "status": self.status(now),
            "roles": list(self.roles) if self.roles is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "concurrency": self.concurrency,
            "budget": str(self.budget) if self.budget else None,
            "priority": self.priority,
            "scope": "admin" if self.admin else None,
            "created": _iso(self.created),
            "expires": _iso(self.expires) if self.expires is not None else None,
            "previous_valid_until": (
                _iso(self.previous_until)
                if self.previous_until is not None and self.previous_until > now
                else None
            ),
        }


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
