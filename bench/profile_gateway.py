#!/usr/bin/env python3
"""Where aifabric's hot path spends its time: py-spy on one worker under wrk load (issue 5).

    .venv/bin/python bench/profile_gateway.py                      # chat, stream and embeddings, 10 s each
    .venv/bin/python bench/profile_gateway.py --workload stream --duration 20

Starts the same upstreams and fabric file as bench/run.py, one `aifabric serve --workers 1`, drives
it with wrk at c=64 and samples it with py-spy (bench/.venv-tools, created on first use). Writes
per workload the collapsed stacks and a flame graph under bench/results/logs/, and a summary of the
functions with the most samples (own time and inclusive time) to bench/results/profile-latest.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib import machine  # noqa: E402
from benchlib.report import markdown_table  # noqa: E402
from benchlib.targets import (  # noqa: E402
    CHAT_ROLE,
    EMBED_ROLE,
    STREAM_ROLE,
    Upstreams,
    aifabric_available,
    ensure_venv,
    make_aifabric,
)
from benchlib.upstream import (  # noqa: E402
    NginxUpstream,
    SlowStreamUpstream,
    chat_request,
    embeddings_request,
)
from benchlib.wrk import run_wrk  # noqa: E402

PY_SPY = "py-spy==0.4.3"
WORKLOADS: dict[str, tuple[str, str]] = {
    "chat": ("/v1/chat/completions", chat_request(CHAT_ROLE)),
    "stream": ("/v1/chat/completions", chat_request(STREAM_ROLE, stream=True)),
    "embeddings": ("/v1/embeddings", embeddings_request(EMBED_ROLE)),
}


def function_of(frame: str) -> str:
    """`Cls.meth (pkg/mod.py:123)` -> `Cls.meth (pkg/mod.py)`: py-spy names lines, we rank functions."""
    head, sep, tail = frame.rpartition(":")
    return f"{head})" if sep and tail.rstrip(")").isdigit() else frame


def parse_collapsed(text: str) -> tuple[Counter[str], Counter[str], int]:
    """(own samples per function, inclusive samples per function, total) from py-spy's raw output.

    Each line is `frame;frame;...;leaf COUNT`; a function counts once per stack for inclusive
    time, however often it recurs in it.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [function_of(f.strip()) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own, inclusive, total


def parse_strace_summary(text: str) -> Counter[str]:
    """Calls per system call from `strace -c` output (the table of `% time ... calls errors syscall`)."""
    calls: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) in (5, 6) and parts[0][0].isdigit() and parts[3].isdigit() and parts[-1] != "total":
            calls[parts[-1]] += int(parts[3])
    return calls


def syscalls_per_request(pid: int, url: str, body: str, duration: float, logs: Path, name: str) -> str:
    """System calls of the worker per request under wrk c=16 (strace -f -c; strace slows it, the
    counts stay right). Writes and reads per request show whether responses are coalesced."""
    out = logs / f"strace-{name}.txt"
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-p", str(pid), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # strace attaches to every thread before the load starts
        result = run_wrk(url, body, 16, duration)
    finally:
        tracer.terminate()
        tracer.wait()
    calls = parse_strace_summary(out.read_text())
    rows = [
        [f"`{sc}`", f"{n / result.requests:.2f}"]
        for sc, n in calls.most_common(8)
        if result.requests and n / result.requests >= 0.01
    ]
    return markdown_table(["system call", "per request"], rows)


def top_table(counter: Counter[str], total: int, n: int) -> str:
    rows = [
        [f"`{frame.strip()[:100]}`", f"{count / total:.1%}" if total else "-"]
        for frame, count in counter.most_common(n)
    ]
    return markdown_table(["function (file:line)", "share of samples"], rows)


def profile_one(
    workload: str, duration: float, up: Upstreams, logs: Path, py_spy: Path, syscalls: bool
) -> str:
    path, body = WORKLOADS[workload]
    target = make_aifabric(1)
    proc = target.launch(up, logs)
    assert proc is not None
    proc.start()
    try:
        url = f"http://127.0.0.1:{proc.port}{path}"
        run_wrk(url, body, 16, 1)  # warm up pools and caches
        raw_out = logs / f"profile-{workload}.txt"
        svg_out = logs / f"profile-{workload}.svg"
        load = threading.Thread(target=run_wrk, args=(url, body, 64, duration + 2))
        load.start()
        for fmt, out in (("raw", raw_out), ("flamegraph", svg_out)):
            subprocess.run(
                [
                    *(str(py_spy), "record", "-p", str(proc.pid), "-d", str(int(duration / 2))),
                    *("-r", "250", "--nonblocking", "-f", fmt, "-o", str(out)),
                ],
                check=True,
                capture_output=True,
            )
        load.join()
        sys_table = (
            syscalls_per_request(proc.pid, url, body, min(duration, 3.0), logs, workload)
            if syscalls and shutil.which("strace")
            else ""
        )
    finally:
        proc.stop()
    own, inclusive, total = parse_collapsed(raw_out.read_text())
    return "\n".join(
        [
            f"## {workload} (c=64, {total} samples; flame graph: results/logs/{svg_out.name})",
            "",
            "Own time (the frame at the top of the stack):",
            "",
            top_table(own, total, 25),
            "",
            "Inclusive time:",
            "",
            top_table(inclusive, total, 25),
            "",
            *(
                ["System calls of the worker per request (strace -c, wrk c=16):", "", sys_table, ""]
                if sys_table
                else []
            ),
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sampling per workload")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "profile-latest.md")
    ap.add_argument("--no-syscalls", action="store_true", help="skip counting system calls with strace")
    args = ap.parse_args()
    why = aifabric_available()
    if why is not None:
        print(f"cannot profile: {why}", file=sys.stderr)
        return 1
    logs = BENCH / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    py_spy = ensure_venv("tools", PY_SPY, logs / "install-tools.log") / "bin" / "py-spy"
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    info = machine.describe(sys.executable)
    sections = []
    with NginxUpstream() as nginx, SlowStreamUpstream() as slow:
        up = Upstreams(nginx.json_port, nginx.sse_port, slow.port)
        for w in workloads:
            print(f"profiling {w} ...", flush=True)
            sections.append(profile_one(w, args.duration, up, logs, py_spy, not args.no_syscalls))
    text = "\n".join(
        [
            "# Profile of aifabric's hot path (py-spy, `aifabric serve --workers 1`, wrk c=64)",
            "",
            f"Machine: {machine.describe_line(info)}. py-spy samples at 250 Hz without pausing the "
            "process (--nonblocking). Shares are of all samples of the main thread: `Runner.run "
            "(asyncio/runners.py)` as the top frame is time inside uvloop's C code (epoll wait, "
            "socket reads, callbacks dispatch), idle included; a Python line that writes to a "
            "transport carries the send() system call.",
            "",
            *sections,
        ]
    )
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
