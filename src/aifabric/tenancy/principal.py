"""Who is asking: the identity every authenticated request carries, small and immutable.

The gateway resolves it once, on the request head (before the body is read), and everything after
reads it: the role check, the limiters, the priority queue, the usage ledger (which records
`principal.name`) and the budget check (which reads `principal.budget`). It never holds the key itself,
only what the key record says, so it can be logged and shown.

    Principal
      name         the key's name (`keys create --name APP`); "master" for gateway.api_keys, "anonymous"
                   when the gateway has no keys at all
      roles        the roles it may use, or None for every role
      priority     interactive | batch: its requests' place in a backend's queue (a header may lower it)
      rpm, tpm     requests and tokens per minute, or None for no limit
      concurrency  requests in flight at once, or None for no limit
      budget       amount per period (enforced by the budget check, not here), or None
      admin        operator scope (`keys create --scope admin`, or a gateway.admin_keys key)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aifabric.config.money import Budget, BudgetPeriod

__all__ = ["ANONYMOUS", "MASTER", "Budget", "BudgetPeriod", "Principal", "Priority"]


class Priority(enum.StrEnum):
    """A request's place in a backend's queue: every waiting `interactive` request goes first."""

    INTERACTIVE = "interactive"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """Lower is served first."""
        return 0 if self is Priority.INTERACTIVE else 1


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity of one authenticated request (see the module docstring)."""

    name: str
    roles: frozenset[str] | None = None
    priority: Priority = Priority.INTERACTIVE
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget: Budget | None = None
    admin: bool = False
    #: a key from the fabric file (gateway.api_keys) rather than the key store
    master: bool = False

    def allows(self, role: str) -> bool:
        """Whether this principal may use `role` (a role name, aliases already resolved)."""
        return self.roles is None or role in self.roles


#: every request of a gateway with no keys at all (no gateway.api_keys, an empty key store)
ANONYMOUS = Principal("anonymous")
#: a key of gateway.api_keys: every role, no limits (operator scope comes from gateway.admin_keys)
MASTER = Principal("master", master=True)
