"""What the operator sees while local backends start: one line per backend.

    chat-fast   loading (3 s)      pid 1234, port 8101
    embeddings  ready in 0.4 s     pid 1236, port 8103

On a terminal the block is redrawn in place (a live line per backend); anywhere else (a log, CI, a pipe)
each change of state is printed once as a plain line, plus a "still loading" line every `heartbeat`
seconds so a slow start never looks like a hang. Messages (restarts, errors) are printed above the block.
Thread-safe: the supervisor's thread writes, the main thread may too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(
        self, out: TextIO, *, live: bool, clock: Callable[[], float], heartbeat: float = 10.0
    ) -> None:
        self._out = out
        self._live = live
        self._clock = clock
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._lines: dict[str, str] = {}  # name -> current text, in insertion order
        self._since: dict[str, float] = {}  # name -> when it entered "loading"
        self._last_plain: dict[str, float] = {}
        self._drawn = 0  # how many lines of the live block are on screen
        self._width = 0
        self._finished = False

    def track(self, name: str) -> None:
        with self._lock:
            self._lines.setdefault(name, "starting")
            self._width = max(self._width, len(name))

    def state(self, name: str, text: str, *, loading: bool = False) -> None:
        """Backend `name` is now in `text`; `loading` starts its elapsed-time display."""
        with self._lock:
            if self._finished:  # after start-up (a restart): a plain line, nothing redrawn under the logs
                self._write(f"{name}: {text}\n")
                return
            self._width = max(self._width, len(name))
            now = self._clock()
            if loading:
                self._since[name] = now
            else:
                self._since.pop(name, None)
            self._lines[name] = text
            if self._live:
                self._redraw()
            else:
                self._last_plain[name] = now
                self._write(self._format(name, text) + "\n")

    def tick(self) -> None:
        """Refresh elapsed times: redraw (live) or a heartbeat line for each slow backend (plain)."""
        with self._lock:
            if self._finished:
                return
            now = self._clock()
            if self._live:
                if self._since:
                    self._redraw()
                return
            for name, since in self._since.items():
                if now - self._last_plain.get(name, since) >= self._heartbeat:
                    self._last_plain[name] = now
                    self._write(
                        self._format(name, self._lines[name]) + f" (still loading, {now - since:.0f} s)\n"
                    )

    def message(self, text: str) -> None:
        """A line that stays (restart, error): printed above the live block."""
        with self._lock:
            if self._live and self._drawn:
                self._write(f"\x1b[{self._drawn}F\x1b[J")  # up to the block's first line, clear below
                self._drawn = 0
                self._write(text + "\n")
                self._redraw()
            else:
                self._write(text + "\n")

    def finish(self) -> None:
        """Leave the block as it is and stop redrawing it: later states are plain lines below."""
        with self._lock:
            if self._live and self._drawn:
                self._redraw()
            self._lines.clear()
            self._since.clear()
            self._drawn = 0
            self._finished = True

    def _format(self, name: str, text: str) -> str:
        since = self._since.get(name)
        if since is not None and self._live:
            text = f"{text} ({self._clock() - since:.0f} s)"
        return f"  {name.ljust(self._width)}  {text}"

    def _redraw(self) -> None:
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")
        for name, text in self._lines.items():
            parts.append("\x1b[2K" + self._format(name, text) + "\n")
        self._drawn = len(self._lines)
        self._write("".join(parts))

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()
