"""Waiting, in tests and drills, for a state something else brings about (a server thread, a timer, a
control loop): polled with a bound on how long, which is never a timing assertion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["eventually", "wait_until"]


def wait_until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> float:
    """Poll `condition` from a blocking thread until it holds; the seconds it took (for printed
    timings). AssertionError naming `what` when it has not held within `limit` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit:g} s waiting for: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


async def eventually(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """`wait_until` on an event loop, whose other tasks bring the condition about meanwhile."""
    try:
        async with asyncio.timeout(limit):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit:g} s waiting for: {what}") from None
