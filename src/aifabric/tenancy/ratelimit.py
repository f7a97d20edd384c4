"""Requests and tokens per minute: a sliding-window counter, pure, with the time passed in.

    window k-1 (previous)          window k (current)
    |--------- prev -----------|------ cur --->| now
                               ^ start          elapsed = now - start

    used(now) = prev * (1 - elapsed / W) + cur

The previous window's count is taken as spread evenly over it, so the estimate slides with time instead
of resetting at the minute (a fixed window lets 2x the limit through around the boundary); two integers
per key and scope, no per-request log. Windows are aligned to the epoch (`floor(now / W)`), so gateway
replicas agree on which window a request fell in and can add up their counts (tenancy.limitsync):
`shared_prev`/`shared_cur` are what the other replicas counted in the same two windows.

`retry_after` is exactly when `used + amount` first fits under the limit again, from the formula
above; `reset` is when `used` reaches zero (OpenAI's `x-ratelimit-reset-*`).

Between two exchanges of counts a process does not see what the others admit, so each may spend only
its part of what was left at the last exchange (`resplit`):

    since <= (limit - used at the last exchange) / N          N: the processes the exchange saw

so N processes together stay within the limit however a burst falls on them; each exchange splits the
headroom again. One exception keeps a small limit reachable (with a headroom of 1 request and 2
processes, each part is half a request): after each exchange one process, in turn (`turn`), may admit
its first request with only the room it sees. Requests then never pass the limit together (the
process in turn takes 1 where the others' parts are under one request each); tokens may pass it by
at most that one request's tokens beyond the part.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

__all__ = [
    "OPENAI_HEADERS",
    "WINDOW",
    "Decision",
    "SlidingWindow",
    "anthropic_headers",
    "format_reset",
    "parse_reset",
]

WINDOW = 60.0  # seconds: per-minute limits
_RESPLIT = 1.0  # seconds a request refused for its process's part waits: exchanges are 4 a second

# OpenAI's rate-limit headers, (limit, remaining, reset) names for "requests" and for "tokens".
OPENAI_HEADERS: dict[str, tuple[str, str, str]] = {
    what: (f"x-ratelimit-limit-{what}", f"x-ratelimit-remaining-{what}", f"x-ratelimit-reset-{what}")
    for what in ("requests", "tokens")
}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int  # after this request, when allowed
    reset: float  # seconds until the window is empty again
    retry_after: float  # seconds until this request would fit (0 when allowed)


class SlidingWindow:
    __slots__ = (
        "allowance",
        "index",
        "limit",
        "mine_cur",
        "mine_prev",
        "shared_cur",
        "shared_prev",
        "since",
        "turn",
        "window",
    )

    def __init__(self, limit: int, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.index = 0  # which window `mine_cur` counts
        self.mine_cur = 0.0
        self.mine_prev = 0.0
        # What other replicas counted in the windows `index` and `index - 1` (set by the sync).
        self.shared_cur = 0.0
        self.shared_prev = 0.0
        # This process's part of the headroom between two exchanges, and what it counted since the
        # last one (`resplit`); no bound of its own while alone or while nothing is exchanged.
        self.allowance = math.inf
        self.since = 0.0
        self.turn = True  # whether its first request after an exchange needs only the room

    def _roll(self, now: float) -> float:
        """Move to the window of `now`; its elapsed fraction."""
        index = math.floor(now / self.window)
        if index != self.index:
            if index == self.index + 1:
                self.mine_prev, self.shared_prev = self.mine_cur, self.shared_cur
            else:
                self.mine_prev = self.shared_prev = 0.0
            self.mine_cur = self.shared_cur = 0.0
            self.index = index
        return now / self.window - index

    def used(self, now: float) -> float:
        fraction = self._roll(now)
        return (self.mine_prev + self.shared_prev) * (1.0 - fraction) + self.mine_cur + self.shared_cur

    def room(self, now: float, cap: float) -> float:
        """`cap` minus what is used now (negative when over), or less: what is left of this process's
        part since the last exchange. The admission's fast path, which builds a `Decision` only for a
        refusal."""
        fraction = self._roll(now)
        used = (self.mine_prev + self.shared_prev) * (1.0 - fraction) + self.mine_cur + self.shared_cur
        left = cap - used
        if self.since > 0 or not self.turn:  # in turn, the first request needs only the room
            part = self.allowance - self.since
            if part < left:
                return part
        return left

    def resplit(self, now: float, processes: int, since: float = 0.0, *, turn: bool = True) -> None:
        """An exchange of counts just ended: this process may now spend 1/`processes` of the headroom
        it sees (the shared counts are current), the others the same; alone, the whole limit.
        `since`: what it counted after it published its counts, spent from the new part; `turn`:
        whether its first request until the next exchange needs only the room (one process a round)."""
        self.since = max(0.0, since)
        self.turn = turn
        if processes <= 1:
            self.allowance = math.inf
            return
        self.allowance = max(0.0, self.limit - self.used(now)) / processes

    def end_turn(self) -> None:
        """This process is publishing its counts: its turn, unused, ends here. A request it let in
        beyond its part after that would be in no count the next turn's holder reads (seen in a
        2-worker burst: the holder of the last turn admitted during its exchange, the next holder saw
        room for one more, 6 of a limit of 5). Until `resplit` hands out the next turn, its part
        bounds it."""
        self.turn = False

    def unsplit(self) -> None:
        """Counts are no longer exchanged: the admission enforces a share of the limit instead."""
        self.since = 0.0
        self.turn = True
        self.allowance = math.inf

    def peek(self, now: float, amount: float = 1.0, *, limit: float | None = None) -> Decision:
        """Whether `amount` fits under the limit (or under `limit`, this replica's share when the
        shared counts cannot be had), counting nothing. An amount larger than the whole limit fits an
        empty window, so that one big request is slow rather than impossible."""
        cap = self.limit if limit is None else limit
        fraction = self._roll(now)
        prev = self.mine_prev + self.shared_prev
        cur = self.mine_cur + self.shared_cur
        used = prev * (1.0 - fraction) + cur
        amount = min(amount, cap)
        part = self.allowance - self.since if self.since > 0 or not self.turn else math.inf
        if used + amount <= cap + 1e-9:
            if amount <= part + 1e-9:
                left = min(cap - used, part) - amount
                return Decision(True, self.limit, _floor(left), self._reset(now, amount), 0.0)
            # The limit has room, this process's part of it until the next exchange has not: the
            # next exchange (a fraction of a second) splits the headroom again.
            return Decision(False, self.limit, _floor(part), self._reset(now, 0.0), _RESPLIT)
        return Decision(
            False,
            self.limit,
            _floor(cap - used),
            self._reset(now, 0.0),
            self._wait(now, prev, cur, amount, cap),
        )

    def take(self, now: float, amount: float = 1.0) -> None:
        self._roll(now)
        self.mine_cur += amount
        self.since += amount

    def add(self, amount: float) -> None:
        """`take` right after `room` at the same instant: the window is rolled already (the admission's
        fast path reads then counts every window of a request, thousands of times a second)."""
        self.mine_cur += amount
        self.since += amount

    def try_take(self, now: float, amount: float = 1.0, *, limit: float | None = None) -> Decision:
        decision = self.peek(now, amount, limit=limit)
        if decision.allowed:
            self.take(now, min(amount, self.limit if limit is None else limit))
        return decision

    def adjust(self, now: float, delta: float) -> None:
        """Correct a count once the real figure is known (tokens: estimated at admission, reported by
        the backend at the end); never below zero."""
        self._roll(now)
        self.mine_cur = max(0.0, self.mine_cur + delta)
        self.since = max(0.0, self.since + delta)

    def reset(self, now: float, adding: float) -> float:
        """Seconds until the window is empty again, once `adding` is counted (`x-ratelimit-reset-*`)."""
        return self._reset(now, adding)

    def _reset(self, now: float, adding: float) -> float:
        start = self.index * self.window
        if self.mine_cur + self.shared_cur + adding > 0:
            return start + 2 * self.window - now
        if self.mine_prev + self.shared_prev > 0:
            return start + self.window - now
        return 0.0

    def _wait(self, now: float, prev: float, cur: float, amount: float, cap: float) -> float:
        start = self.index * self.window
        w = self.window
        if cur + amount <= cap and prev > 0:
            # Within this window, as the previous one's share fades: prev * (1 - e/W) <= cap - cur - amount.
            elapsed = w * (1.0 - (cap - cur - amount) / prev)
            return max(0.0, start + elapsed - now)
        # Not in this window: in the next, this one's count fades the same way.
        if cur <= 0:
            return max(0.0, start + w - now)
        elapsed = w * max(0.0, 1.0 - (cap - amount) / cur)
        return max(0.0, start + w + elapsed - now)


def _floor(value: float) -> int:
    return max(0, math.floor(value + 1e-9))


def format_reset(seconds: float) -> str:
    """OpenAI's form of a duration in `x-ratelimit-reset-*`: `20ms`, `1.5s`, `6m0s`."""
    if 60 <= seconds < 179.5:  # an admitted request's reset, on every answer: made once, not per request
        return _MINUTES[int(seconds + 0.5) - 60]  # not round(): a call to the builtin, per request
    return _format_reset(seconds)


def _format_reset(seconds: float) -> str:
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds + 0.5), 60)  # half up, as format_reset's table
    return f"{minutes}m{rest}s"


_MINUTES = tuple(_format_reset(float(s)) for s in range(60, 180))


_DURATION = re.compile(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?")


def parse_reset(text: str) -> float | None:
    """Seconds from a duration `format_reset` wrote (`20ms`, `1.5s`, `6m0s`); None for anything else."""
    found = _DURATION.fullmatch(text.strip())
    if found is None or not any(found.groups()):
        return None
    minutes, seconds, millis = found.groups()
    return int(minutes or 0) * 60 + float(seconds or 0) + int(millis or 0) / 1000


# OpenAI's x-ratelimit-* names -> Anthropic's anthropic-ratelimit-* (the reset: a duration there, an
# RFC 3339 time here).
_ANTHROPIC = {
    openai: (f"anthropic-ratelimit-{what}-{field}", field == "reset")
    for what, names in OPENAI_HEADERS.items()
    for field, openai in zip(("limit", "remaining", "reset"), names, strict=True)
}


def anthropic_headers(headers: list[tuple[str, str]], now: float) -> list[tuple[str, str]]:
    """The `anthropic-ratelimit-*` headers Anthropic's API sends, for the `x-ratelimit-*` ones among
    `headers` (`now`: epoch seconds, for the absolute reset times). Anthropic's SDKs and agents read
    these on /v1/messages; OpenAI's names stay beside them."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        mapped = _ANTHROPIC.get(name)
        if mapped is None:
            continue
        anthropic_name, is_reset = mapped
        if is_reset:
            seconds = parse_reset(value)
            if seconds is None:
                continue
            at = time.gmtime(round(now + seconds))  # as exact as the duration it is read from
            out.append((anthropic_name, time.strftime("%Y-%m-%dT%H:%M:%SZ", at)))
        else:
            out.append((anthropic_name, value))
    return out
