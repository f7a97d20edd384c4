"""Every test here runs on both event loops: uvloop in production, asyncio's own where uvloop is absent.
The loop of the current test is set by the autouse fixture in conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import uvloop

LOOPS = ("asyncio", "uvloop")
_current = ["asyncio"]


def use(loop: str) -> None:
    _current[0] = loop


def run(coro: Awaitable[None]) -> None:
    """Run `coro` to its end on the current test's loop."""
    if _current[0] == "uvloop":
        uvloop.run(coro)  # type: ignore[arg-type]
    else:
        asyncio.run(coro)  # type: ignore[arg-type]
