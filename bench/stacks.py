#!/usr/bin/env python3
"""Issue 2's HTTP-stack comparison: the same minimal reverse proxy in several Python stacks.

Each candidate (bench/stack_candidates/) reads POST /v1/chat/completions, parses the JSON, rewrites
`model`, re-encodes, forwards over a pooled keep-alive connection to nginx answering a fixed
chat.completion, and returns the body. wrk drives it at c=1 and c=64; the table in bench/STACKS.md
gives RPS, added p50 against nginx direct, CPU per request of the proxy process tree and peak RSS.

    .venv/bin/python bench/stacks.py [--duration 10] [--rounds 2] [--only raw_httptools,...]

The candidates run from bench/.venv-stacks (created on demand; never the project venv).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib import machine  # noqa: E402
from benchlib.measure import LoadRun, load_run  # noqa: E402
from benchlib.process import TargetProcess  # noqa: E402
from benchlib.procstat import peak_rss_mib  # noqa: E402
from benchlib.report import Spread, fmt_num, fmt_ratio, fmt_spread, markdown_table  # noqa: E402
from benchlib.upstream import NginxUpstream, chat_request, free_port  # noqa: E402

VENV = BENCH / ".venv-stacks"
CANDIDATE_DIR = BENCH / "stack_candidates"
PACKAGES = [
    "starlette==1.10.0",
    "uvicorn[standard]==0.54.0",
    "httpx==0.28.1",
    "aiohttp==3.14.5",
    "httptools==0.9.0",
    "uvloop==0.23.0",
    "orjson==3.13.0",
    "granian==2.8.7",
]

CANDIDATES = {
    "starlette_httpx": "(a) starlette + uvicorn + httpx.AsyncClient",
    "aiohttp_both": "(b) aiohttp server + aiohttp client",
    "raw_httptools": "(c) asyncio Protocol + httptools + raw pooled client (uvloop)",
    "granian_rsgi": "(d) granian RSGI + raw pooled client",
    "uvicorn_raw_asgi": "(e) uvicorn + bare ASGI + raw pooled client",
}


@dataclass
class Tally:
    label: str
    c1: list[LoadRun] = field(default_factory=list)
    c64: list[LoadRun] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    hwm_max_mib: float = 0.0
    hwm_sum_mib: float = 0.0
    procs: int = 0


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PACKAGES],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return python


def run(duration: float, rounds: int, only: list[str]) -> dict[str, Tally]:
    python = ensure_venv()
    body = chat_request("chat-fast")
    tallies = {"direct": Tally("direct (nginx)")} | {k: Tally(CANDIDATES[k]) for k in only}
    logs = BENCH / "results" / "logs"
    with NginxUpstream() as nginx:
        upstream = f"http://127.0.0.1:{nginx.json_port}/v1/chat/completions"
        for rnd in range(1, rounds + 1):
            for c, attr in ((1, "c1"), (64, "c64")):
                run_ = load_run("chat", upstream, body, c, duration, None)
                getattr(tallies["direct"], attr).append(run_)
            print(f"round {rnd} direct: c1 {tallies['direct'].c1[-1].wrk.rps:,.0f} RPS", flush=True)
            for name in only:
                port = free_port()
                target = TargetProcess(
                    name,
                    [
                        str(python),
                        str(CANDIDATE_DIR / f"{name}.py"),
                        *("--port", str(port), "--upstream-port", str(nginx.json_port)),
                    ],
                    port,
                    "/health",
                    logs / f"stack-{name}.log",
                    cwd=CANDIDATE_DIR,
                )
                tally = tallies[name]
                tally.ready_s.append(target.start())
                try:
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    load_run("warmup", url, body, 16, 1, None)
                    for c, attr in ((1, "c1"), (64, "c64")):
                        getattr(tally, attr).append(load_run("chat", url, body, c, duration, target))
                    hmax, hsum, n = peak_rss_mib(target.sample())
                    tally.hwm_max_mib = max(tally.hwm_max_mib, hmax)
                    tally.hwm_sum_mib = max(tally.hwm_sum_mib, hsum)
                    tally.procs = n
                finally:
                    target.stop()
                r1, r64 = tally.c1[-1].wrk, tally.c64[-1].wrk
                print(
                    f"round {rnd} {name}: c1 {r1.rps:,.0f} RPS, c64 {r64.rps:,.0f} RPS, "
                    f"errors {r1.errors + r64.errors}",
                    flush=True,
                )
    return tallies


def render(tallies: dict[str, Tally], info: dict[str, object], duration: float, rounds: int) -> str:
    direct = tallies["direct"]
    direct_p50 = Spread.of([r.wrk.p50_us for r in direct.c1])
    rows = []
    for name, t in tallies.items():
        rps1 = Spread.of([r.wrk.rps for r in t.c1])
        rps64 = Spread.of([r.wrk.rps for r in t.c64])
        p50 = Spread.of([r.wrk.p50_us for r in t.c1])
        added = (
            None
            if name == "direct" or p50 is None or direct_p50 is None
            else Spread.of([r.wrk.p50_us - direct_p50.mean for r in t.c1])
        )
        cpu1 = Spread.of([r.cpu_us_per_request for r in t.c1])
        cpu64 = Spread.of([r.cpu_us_per_request for r in t.c64])
        errors = sum(r.wrk.errors for r in t.c1 + t.c64)
        shares = [r.foreign_share for r in t.c1 + t.c64]
        others = f"{sum(shares) / len(shares):.0%} (max {max(shares):.0%})" if shares else "-"
        rows.append(
            [
                t.label,
                fmt_spread(rps1),
                fmt_spread(rps64),
                fmt_spread(p50, 1e-3, " ms"),
                fmt_spread(added, 1e-3, " ms"),
                fmt_spread(cpu1, 1.0, " µs"),
                fmt_spread(cpu64, 1.0, " µs"),
                "-" if name == "direct" else f"{fmt_num(t.hwm_max_mib)} MB ({t.procs} proc)",
                "-" if not t.ready_s else fmt_spread(Spread.of(t.ready_s), 1.0, " s"),
                str(errors),
                others,
            ]
        )
    table = markdown_table(
        [
            "stack",
            "RPS c=1",
            "RPS c=64",
            "p50 c=1",
            "added p50 c=1",
            "CPU/req c=1",
            "CPU/req c=64",
            "peak RSS (largest proc)",
            "start to ready",
            "errors",
            "others' CPU",
        ],
        rows,
    )
    ranked = sorted(
        (n for n in tallies if n != "direct"),
        key=lambda n: -(Spread.of([r.wrk.rps for r in tallies[n].c64]) or Spread(0, 0, 0, 0)).mean,
    )
    best = ranked[0] if ranked else None
    lines = []
    if best is not None:
        b = Spread.of([r.wrk.rps for r in tallies[best].c64])
        for n in ranked[1:]:
            o = Spread.of([r.wrk.rps for r in tallies[n].c64])
            ratio = fmt_ratio(b.mean if b else None, o.mean if o else None)
            lines.append(f"- {tallies[best].label} vs {tallies[n].label}: {ratio}")
    return "\n".join(
        [
            f"Machine: {machine.describe_line(info)}. CPU busy before the run: "
            f"{info.get('busy_before', 0):.0%}.",
            f"wrk -t1 -c1 and -t2 -c64, {duration:.0f} s per run, {rounds} rounds (mean, with the range "
            "when rounds differ by more than 1%); nginx (1 worker) answers a fixed chat.completion.",
            "CPU/req = utime+stime of the proxy's process tree over the run / requests completed. "
            "others' CPU = share of both cores used by processes not part of the benchmark during its runs "
            "(the machine is shared).",
            "",
            table,
            "",
            f"RPS at c=64, best ({tallies[best].label if best else '-'}) against the others:",
            *lines,
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidate names")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "stacks-latest.md")
    args = ap.parse_args()
    # A SIGTERM unwinds like Ctrl-C would, so every started candidate and nginx are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in CANDIDATES]
    if unknown:
        print(f"unknown candidate(s): {unknown}; known: {list(CANDIDATES)}", file=sys.stderr)
        return 2
    info = machine.describe(sys.executable)
    info["busy_before"] = machine.busy_fraction()
    t0 = time.monotonic()
    tallies = run(args.duration, args.rounds, only)
    text = render(tallies, info, args.duration, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    raw = {
        name: {
            "label": t.label,
            "c1": [r.to_dict() for r in t.c1],
            "c64": [r.to_dict() for r in t.c64],
            "ready_s": t.ready_s,
            "hwm_max_mib": t.hwm_max_mib,
            "hwm_sum_mib": t.hwm_sum_mib,
        }
        for name, t in tallies.items()
    }
    args.out.with_suffix(".json").write_text(json.dumps({"machine": info, "results": raw}, indent=1))
    print(text)
    print(f"\nwritten to {args.out} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
