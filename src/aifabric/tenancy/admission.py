"""Admission: whether a request may go now, by its key's and its role's limits.

    key   rpm, tpm            from the key record (`keys create --rpm/--tpm`)
    key   concurrency         requests of the key in flight at once
    role  rpm, tpm            from the fabric file (`roles.X.limits`), every key together

Requests count 1; tokens are estimated at admission (prompt characters / 4, plus `max_tokens` when the
request sets one) and corrected with the backend's `usage.total_tokens` when a non-streamed answer
reports it. Nothing is counted unless every limit allows the request.

The counters live in this process. Shared across workers and replicas, `share_at()` says which fraction
of each per-minute limit this process may use: 1 while tenancy.limitsync keeps the other processes'
counts current (each window then also bounds what this process admits between two exchanges to its
part of the headroom: tenancy.ratelimit), 1/N (N workers or replicas) while it cannot. Requests in
flight are not exchanged: `concurrency_share()` is this process's 1/N, unless they are counted across
the processes: by `leases` (the workers of one machine: tenancy.leases), or by `shared_leases` (every
replica on Redis: tenancy.redis_leases; taking one is a round trip, so `admit` leaves it pending and
`Ticket.hold` takes it before the request is forwarded). Nothing here does I/O but the leases given
to it; the clock is passed in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple, NoReturn, Protocol

from aifabric.config.schema import RoleLimits
from aifabric.errors import RateLimited, StateStoreError
from aifabric.tenancy.principal import Principal
from aifabric.tenancy.ratelimit import OPENAI_HEADERS, Decision, SlidingWindow, format_reset

__all__ = ["Admission", "Leases", "Scope", "SharedLeases", "Ticket", "estimate_tokens"]

Scope = tuple[str, str, str]  # ("key" | "role", name, "requests" | "tokens")


_PLANS_MAX = 4096  # (key, role, limits) plans kept; past it the cache starts over
# Final: mypyc reads these as constants, not from the module's dict on every request.
_REQUESTS_LIMIT: Final = OPENAI_HEADERS["requests"][0]
_REQUESTS_REMAINING: Final = OPENAI_HEADERS["requests"][1]
_REQUESTS_RESET: Final = OPENAI_HEADERS["requests"][2]
_TOKENS_LIMIT: Final = OPENAI_HEADERS["tokens"][0]
_TOKENS_REMAINING: Final = OPENAI_HEADERS["tokens"][1]
_TOKENS_RESET: Final = OPENAI_HEADERS["tokens"][2]


class _Plan(NamedTuple):
    checks: tuple[tuple[SlidingWindow, bool, int, str], ...]  # (window, counts tokens, limit, str(limit))
    scopes: tuple[Scope, ...]  # the scope of each check
    token_windows: tuple[SlidingWindow, ...]  # the windows that count tokens (settled at the end)


class Leases(Protocol):
    """Requests in flight counted across processes (tenancy.leases): a slot of a key's limit, or None."""

    def acquire(self, name: str, limit: int) -> int | None: ...

    def release(self, name: str, slot: int) -> None: ...


class SharedLeases(Protocol):
    """Requests in flight counted by every process on the shared state (tenancy.redis_leases): taking a
    lease is a round trip, so it is awaited before forwarding (`Ticket.hold`), not in `admit`."""

    reachable: bool

    async def acquire(self, name: str, limit: int) -> str | None: ...

    def release(self, name: str, lease: str) -> None: ...


class Ticket:
    """One admitted request: its rate-limit headers, and what to give back when it ends."""

    __slots__ = (
        "_admission",
        "_estimate",
        "_in_flight",
        "_lease",
        "_shared",
        "_token_windows",
        "headers",
        "pending",
    )

    def __init__(
        self,
        admission: Admission,
        in_flight: str | None,
        token_windows: tuple[SlidingWindow, ...],
        estimate: int,
        headers: list[tuple[str, str]],
        lease: int | None = None,
    ) -> None:
        self._admission = admission
        self._in_flight = in_flight
        self._lease = lease
        self._token_windows = token_windows
        self._estimate = estimate
        self.headers = headers
        # A lease of the shared state still to take (`hold`): the key, its limit, and what admission
        # counted in each window (given back if the lease is refused).
        self.pending: tuple[str, int, tuple[tuple[SlidingWindow, float], ...]] | None = None
        self._shared: tuple[str, str] | None = None  # the key and its lease on the shared state

    @property
    def counts_tokens(self) -> bool:
        return bool(self._token_windows)

    def settle(self, tokens: int) -> None:
        """The backend reported `tokens` for the request: correct the estimate counted at admission."""
        if self._token_windows and tokens >= 0:
            now = self._admission.wall()
            delta = tokens - self._estimate
            for window in self._token_windows:
                window.adjust(now, delta)
            self._token_windows = ()

    async def hold(self) -> None:
        """Take the pending lease of the key's concurrency limit on the shared state. RateLimited when
        the key has its limit of requests in flight in all the processes together; then, as for any
        refusal, the request counts against nothing. Redis away: this process's share of the limit."""
        if self.pending is None:
            return
        name, limit, counted = self.pending
        self.pending = None
        admission = self._admission
        shared = admission.shared_leases
        try:
            if shared is None:
                raise StateStoreError("no shared state")
            lease = await shared.acquire(name, limit)
            if lease is None:
                raise _concurrency_refused(name, limit)
            self._shared = (name, lease)
        except StateStoreError:
            try:
                self._lease = admission.enter(name, limit)
            except RateLimited:
                admission.give_back(counted)
                raise
            self._in_flight = name
        except RateLimited:
            admission.give_back(counted)
            raise

    def release(self) -> None:
        """The request is over (answered, failed, or its client went away). Idempotent."""
        if self._in_flight is not None:
            self._admission.leave(self._in_flight, self._lease)
            self._in_flight = None
        elif self._shared is not None:
            shared = self._admission.shared_leases
            if shared is not None:
                shared.release(*self._shared)
            self._shared = None


class Admission:
    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        share: float = 1.0,
        concurrency_share: Callable[[], float] = lambda: 1.0,
    ) -> None:
        self.wall = wall
        # Which fraction of each per-minute limit this process may use (`share_at`): the whole limit
        # until `fresh_until` (wall clock: the shared counts are current until then), `share` after.
        # Data, not a callback: read on every admitted request. tenancy.limitsync sets both after
        # each exchange; alone, the whole limit always.
        self.fresh_until = math.inf if share >= 1.0 else -math.inf
        self.stale_share = share
        # Requests in flight are not exchanged between processes: each allows its share, always.
        self._concurrency_share = concurrency_share
        self.windows: dict[Scope, SlidingWindow] = {}
        # How many processes share the limits, as the last exchange of counts saw (tenancy.limitsync
        # sets it): a window first used between two exchanges gets its part of the limit at once.
        self.processes = 1
        self._plans: dict[tuple[str, str, int | None, int | None, int | None, int | None], _Plan] = {}
        self.in_flight: dict[str, int] = {}
        # Set under `serve --workers N`: a key's requests in flight counted across the workers.
        self.leases: Leases | None = None
        # Set when state is shared (Redis): counted by every replica and worker together.
        self.shared_leases: SharedLeases | None = None

    def share_at(self, now: float) -> float:
        """The fraction of each per-minute limit this process may use at `now`."""
        return 1.0 if now <= self.fresh_until else self.stale_share

    def _window(self, scope: Scope, limit: int, now: float) -> SlidingWindow:
        window = self.windows.get(scope)
        if window is None or not window.limit:  # new, or known so far only by the others' counts
            if window is None:
                window = self.windows[scope] = SlidingWindow(limit)
            window.limit = limit
            # Until the next exchange: its part of the headroom, the first request not excepted
            # (whose turn it is, the exchange says).
            window.resplit(now, self.processes, turn=False)
        elif window.limit != limit:
            window.limit = limit  # the key or the role was changed: the new limit, the same counts
        return window

    def admit(
        self, principal: Principal, role: str, limits: RoleLimits, payload: dict[str, Any]
    ) -> Ticket | None:
        """A ticket for a request of `principal` to `role`, or RateLimited. None when no limit
        applies (the common case costs a few attribute reads)."""
        if (
            principal.rpm is None
            and principal.tpm is None
            and principal.concurrency is None
            and limits.rpm is None
            and limits.tpm is None
        ):
            return None
        now = self.wall()
        share = self.share_at(now)
        plan = self._plan(principal, role, limits, now)
        tokens = estimate_tokens(payload) if plan.token_windows else 0
        # The fast path: every window has room. It counts nothing until all said yes, and builds no
        # Decision; a refusal is worked out again below by `peek`, which also counts nothing. Of each
        # kind (requests, tokens), the tightest window gives the headers; of equals, the first (key's).
        # Plain locals, not tuples: this runs on every request of a limited key or role.
        requests_left = tokens_left = -1
        requests_window: SlidingWindow | None = None
        tokens_window: SlidingWindow | None = None
        requests_limit = tokens_limit = ""
        requests_amount = tokens_amount = 0.0
        for window, is_tokens, limit, limit_text in plan.checks:
            if window.limit != limit:  # a plan made before the key's or role's limit changed back
                window.limit = limit
            cap = limit * share
            amount = min(float(tokens) if is_tokens else 1.0, cap)
            left = window.room(now, cap) - amount
            if left < -1e-9:
                return self._refuse(principal, plan, now, share, tokens)
            remaining = int(left + 1e-9) if left > 0 else 0  # floor, never below 0
            if is_tokens:
                if tokens_window is None or remaining < tokens_left:
                    tokens_window, tokens_left, tokens_amount = window, remaining, amount
                    tokens_limit = limit_text
            elif requests_window is None or remaining < requests_left:
                requests_window, requests_left, requests_amount = window, remaining, amount
                requests_limit = limit_text
        headers: list[tuple[str, str]] = []
        if requests_window is not None:
            headers.append((_REQUESTS_LIMIT, requests_limit))
            headers.append((_REQUESTS_REMAINING, str(requests_left)))
            headers.append((_REQUESTS_RESET, format_reset(requests_window.reset(now, requests_amount))))
        if tokens_window is not None:
            headers.append((_TOKENS_LIMIT, tokens_limit))
            headers.append((_TOKENS_REMAINING, str(tokens_left)))
            headers.append((_TOKENS_RESET, format_reset(tokens_window.reset(now, tokens_amount))))
        lease = None
        in_flight = None
        concurrency = principal.concurrency
        shared = concurrency is not None and self.shared_leases is not None and self.shared_leases.reachable
        if concurrency is not None and not shared:
            lease = self.enter(principal.name, concurrency)
            in_flight = principal.name
        for window, is_tokens, limit, _ in plan.checks:  # room() rolled each window to `now` above
            window.add(min(float(tokens) if is_tokens else 1.0, limit * share))
        ticket = Ticket(self, in_flight, plan.token_windows, tokens, headers, lease)
        if shared:
            assert concurrency is not None
            counted = tuple(
                (window, min(float(tokens) if is_tokens else 1.0, limit * share))
                for window, is_tokens, limit, _ in plan.checks
            )
            ticket.pending = (principal.name, concurrency, counted)
        return ticket

    def enter(self, name: str, concurrency: int) -> int | None:
        """One more request in flight of key `name` in this process (the workers' lease of it, when
        they count together), or RateLimited when it has `concurrency` (or this process's share)."""
        lease = None
        if self.leases is not None:  # the whole limit, held by the workers together
            cap = concurrency
            lease = self.leases.acquire(name, cap)
            full = lease is None
        else:
            cap = max(1, math.floor(concurrency * self._concurrency_share()))
            full = self.in_flight.get(name, 0) >= cap
        if full:
            raise _concurrency_refused(name, cap)
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        return lease

    def give_back(self, counted: tuple[tuple[SlidingWindow, float], ...]) -> None:
        """Uncount a request refused after admission counted it (its shared lease was refused)."""
        now = self.wall()
        for window, amount in counted:
            window.adjust(now, -amount)

    def _plan(self, principal: Principal, role: str, limits: RoleLimits, now: float) -> _Plan:
        """The windows a request of `principal` to `role` is checked against, made once per key, role
        and limits (not per request: a key's or role's new limit makes a new plan)."""
        ident = (principal.name, role, principal.rpm, principal.tpm, limits.rpm, limits.tpm)
        plan = self._plans.get(ident)
        if plan is not None:
            return plan
        checks: list[tuple[SlidingWindow, bool, int, str]] = []
        scopes: list[Scope] = []
        token_windows: list[SlidingWindow] = []
        for kind, name, rpm, tpm in (
            ("key", principal.name, principal.rpm, principal.tpm),
            ("role", role, limits.rpm, limits.tpm),
        ):
            if rpm is not None:
                scope = (kind, name, "requests")
                checks.append((self._window(scope, rpm, now), False, rpm, str(rpm)))
                scopes.append(scope)
            if tpm is not None:
                scope = (kind, name, "tokens")
                window = self._window(scope, tpm, now)
                checks.append((window, True, tpm, str(tpm)))
                scopes.append(scope)
                token_windows.append(window)
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        plan = self._plans[ident] = _Plan(tuple(checks), tuple(scopes), tuple(token_windows))
        return plan

    def _refuse(self, principal: Principal, plan: _Plan, now: float, share: float, tokens: int) -> NoReturn:
        """The RateLimited of a request some window has no room for: the one that frees up last."""
        checks: list[tuple[SlidingWindow, Decision, float, Scope]] = []
        for (window, is_tokens, limit, _), scope in zip(plan.checks, plan.scopes, strict=True):
            amount = tokens if is_tokens else 1
            checks.append((window, window.peek(now, amount, limit=limit * share), amount, scope))
        headers = _headers(checks)
        refused = [c for c in checks if not c[1].allowed]
        _, decision, _, scope = max(refused, key=lambda c: c[1].retry_after)
        raise _rate_limited(principal, scope, decision, headers)

    def leave(self, name: str, lease: int | None = None) -> None:
        if lease is not None and self.leases is not None:
            self.leases.release(name, lease)
        left = self.in_flight.get(name, 0) - 1
        if left > 0:
            self.in_flight[name] = left
        else:
            self.in_flight.pop(name, None)


def _concurrency_refused(name: str, cap: int) -> RateLimited:
    return RateLimited(
        f"The API key '{name}' has {cap} requests in flight, its limit of "
        "concurrent requests; retry when one of them is done.",
        code="concurrency_limit_exceeded",
        headers={"retry-after": "1"},
    )


def _headers(checks: list[tuple[SlidingWindow, Decision, float, Scope]]) -> list[tuple[str, str]]:
    """OpenAI's x-ratelimit-* headers, for the tightest requests limit and the tightest tokens limit."""
    out: list[tuple[str, str]] = []
    for what in ("requests", "tokens"):
        mine = [d for _, d, _, scope in checks if scope[2] == what]
        if not mine:
            continue
        tightest = min(mine, key=lambda d: (d.allowed, d.remaining))
        limit, remaining, reset = OPENAI_HEADERS[what]
        out.append((limit, str(tightest.limit)))
        out.append((remaining, str(tightest.remaining)))
        out.append((reset, format_reset(tightest.reset)))
    return out


def _rate_limited(
    principal: Principal, scope: Scope, decision: Decision, headers: list[tuple[str, str]]
) -> RateLimited:
    kind, name, what = scope
    unit = "requests per minute (RPM)" if what == "requests" else "tokens per minute (TPM)"
    who = f"the API key '{name}'" if kind == "key" else f"the role '{name}' (all keys together)"
    wait = max(1, math.ceil(decision.retry_after))
    return RateLimited(
        f"Rate limit reached for {who} on {unit}: limit {decision.limit}, "
        f"remaining {decision.remaining}. Please try again in {format_reset(decision.retry_after)}.",
        type=what,
        headers={"retry-after": str(wait), **dict(headers)},
    )


def estimate_tokens(payload: dict[str, Any]) -> int:
    """A request's tokens before any backend has seen it: characters / 4 of what it sends, plus the
    completion it allows itself (`max_tokens`, `max_completion_tokens`)."""
    chars = 0
    for message in payload.get("messages") or ():
        if isinstance(message, dict):
            chars += _text_chars(message.get("content")) + 4
    chars += _text_chars(payload.get("prompt")) + _text_chars(payload.get("input"))
    completion = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
    if not isinstance(completion, int) or isinstance(completion, bool):
        completion = 0
    return max(1, chars // 4) + max(0, completion)


def _text_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                total += len(item["text"])
        return total
    return 0
