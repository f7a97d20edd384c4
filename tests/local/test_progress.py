"""What an operator sees while backends load: plain lines in a log, a live block on a terminal."""

from __future__ import annotations

import io

from aifabric.local.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_output_prints_each_change_once_and_a_heartbeat_while_loading() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(out, live=False, clock=clock, heartbeat=10.0)
    progress.track("local-chat")
    progress.track("embed")
    progress.state("local-chat", "loading: pid 7, port 8101", loading=True)
    clock.now += 4
    progress.tick()  # under the heartbeat: nothing new
    clock.now += 7
    progress.tick()
    progress.state("local-chat", "ready in 11.0 s (pid 7, port 8101)")
    clock.now += 30
    progress.tick()  # ready: no more heartbeats
    assert out.getvalue().splitlines() == [
        "  local-chat  loading: pid 7, port 8101",
        "  local-chat  loading: pid 7, port 8101 (still loading, 11 s)",
        "  local-chat  ready in 11.0 s (pid 7, port 8101)",
    ]


def test_live_output_redraws_one_line_per_backend_in_place() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(out, live=True, clock=clock)
    progress.track("chat")
    progress.track("embed")
    progress.state("chat", "loading", loading=True)
    clock.now += 3
    progress.tick()
    screen = _render(out.getvalue())
    assert screen == ["  chat   loading (3 s)", "  embed  starting"]
    progress.message("embed: exited with code 1; restarting in 1 s")
    progress.state("embed", "ready in 0.4 s")
    assert _render(out.getvalue()) == [
        "embed: exited with code 1; restarting in 1 s",
        "  chat   loading (3 s)",
        "  embed  ready in 0.4 s",
    ]


def test_after_start_up_states_are_plain_lines_and_nothing_is_redrawn() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(out, live=True, clock=clock)
    progress.track("embed")
    progress.state("embed", "ready in 0.4 s")
    progress.finish()
    before = out.getvalue()
    progress.state("embed", "loading: pid 9, port 8103", loading=True)  # a restart
    clock.now += 5
    progress.tick()
    assert out.getvalue()[len(before) :] == "embed: loading: pid 9, port 8103\n"


def _render(stream: str) -> list[str]:
    """A tiny terminal: the escape sequences Progress uses (cursor up N lines, clear line, clear below)."""
    import re

    lines: list[str] = []
    row = 0
    for token in re.split(r"(\x1b\[\d*[FJK]|\n)", stream):
        if not token:
            continue
        if token == "\n":
            row += 1
        elif m := re.fullmatch(r"\x1b\[(\d*)F", token):
            row = max(0, row - int(m.group(1) or 1))
        elif token == "\x1b[2K":
            if row < len(lines):
                lines[row] = ""
        elif token == "\x1b[J":
            del lines[row:]
        else:
            while len(lines) <= row:
                lines.append("")
            lines[row] = token
    return [line for line in lines if line]
