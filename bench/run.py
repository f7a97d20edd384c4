#!/usr/bin/env python3
"""The gateway benchmark of issue 5: aifabric against direct, LiteLLM's proxy and the Rust routers.

    make bench                                  # .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --quick       # one short round, about 3 minutes
    .venv/bin/python bench/run.py --only direct,aifabric-w2,vllm-router --rounds 3
    .venv/bin/python bench/run.py --render bench/results/latest.json   # re-print a saved run
    .venv/bin/python bench/run.py --embedded-only --quick   # only the embedded default (issue 10)

In one run, for every target and every round: non-streamed chat at c=1, 16 and 64 and embeddings at
c=16 (wrk, against nginx with fixed bodies), streamed chat at c=16 (wrk, nginx fixed event stream),
time to first token at c=1 (raw-socket client, against an upstream whose chunks arrive apart), the
target's CPU per request (its whole process tree, from /proc), peak RSS (VmHWM of each process) and
time from exec to ready. Gateways that route by model name (aifabric, LiteLLM) get one role per
upstream and run a round from one start; the Rust routers send any model to any worker, so they are
started once per upstream. Writes bench/results/latest.md and latest.json; a full run also refreshes the
results section of bench/README.md. Everything listens on 127.0.0.1; the peers' venvs (bench/.venv-*)
are created on first use from PyPI with pinned versions.

Then the embedded section (issue 10, benchlib/embedded.py): `aifabric up` on the real models, chat and
embeddings through the gateway and straight to each engine, beside the physical limits measured in
the same run; written to bench/results/embedded-latest.md and .json (`--no-embedded` to skip it; a run
narrowed with `--only` skips it too).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib import machine, procstat  # noqa: E402
from benchlib.embedded import run_embedded  # noqa: E402
from benchlib.embedded_report import render_embedded  # noqa: E402
from benchlib.measure import load_run  # noqa: E402
from benchlib.process import TargetProcess  # noqa: E402
from benchlib.stream_client import run_streams  # noqa: E402
from benchlib.summary import render  # noqa: E402
from benchlib.targets import (  # noqa: E402
    CHAT_ROLE,
    EMBED_ROLE,
    SLOW_ROLE,
    SLOW_TRANSLATED_ROLE,
    STREAM_ROLE,
    Target,
    Upstreams,
    aifabric_available,
    all_targets,
)
from benchlib.upstream import (  # noqa: E402
    NginxUpstream,
    SlowStreamUpstream,
    chat_request,
    embeddings_request,
    messages_request,
    responses_request,
)

RESULTS = BENCH / "results"
README = BENCH / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
BUSY_THRESHOLD = 0.15


class Bench:
    def __init__(self, args: argparse.Namespace, targets: list[Target], workdir: Path) -> None:
        self.args = args
        self.targets = targets
        self.workdir = workdir
        self.raw: dict[str, dict[str, Any]] = {
            t.name: {
                "name": t.name,
                "label": t.label,
                "workers": t.workers,
                "is_aifabric": t.is_aifabric,
                "error": None,
                "runs": {},
                "ttft": [],
                "ttft_responses": [],
                "ttft_messages": [],
                "ready_s": [],
                "rss_max_mib": 0.0,
                "rss_total_mib": 0.0,
                "procs": 0,
            }
            for t in targets
        }

    def _start(self, target: Target, up: Upstreams) -> TargetProcess | None:
        """Start the target against the upstreams (None for direct, which has no process)."""
        proc = target.launch(up, self.workdir)
        if proc is None:
            return None
        ready = proc.start(ready_timeout_s=self.args.ready_timeout)
        self.raw[target.name]["ready_s"].append(ready)
        return proc

    def _footprint(self, target: Target, proc: TargetProcess | None) -> None:
        if proc is None:
            return
        hmax, hsum, n = procstat.peak_rss_mib(proc.sample())
        entry = self.raw[target.name]
        entry["rss_max_mib"] = max(entry["rss_max_mib"], hmax)
        entry["rss_total_mib"] = max(entry["rss_total_mib"], hsum)
        entry["procs"] = max(entry["procs"], n)

    def _record(self, target: Target, key: str, value: dict[str, Any]) -> None:
        self.raw[target.name]["runs"].setdefault(key, []).append(value)

    def _stop(self, target: Target, proc: TargetProcess | None) -> None:
        if proc is not None:
            self._footprint(target, proc)
            proc.stop()

    def one_round(self, target: Target, up: Upstreams) -> None:
        """Every workload once. A target that picks its upstream by model name runs them all from
        one start; one that cannot (direct, the Rust routers) is started once per upstream."""
        a = self.args
        headers = target.headers
        chat, embed = chat_request(CHAT_ROLE), embeddings_request(EMBED_ROLE)
        stream, slow = chat_request(STREAM_ROLE, stream=True), chat_request(SLOW_ROLE, stream=True)
        path_chat, path_embed = "/v1/chat/completions", "/v1/embeddings"
        shared = None if target.per_upstream else self._start(target, up)
        try:

            def phase(port: int) -> tuple[TargetProcess | None, int]:
                if not target.per_upstream:
                    assert shared is not None
                    return shared, shared.port
                proc = self._start(target, Upstreams.only(port))
                return proc, port if proc is None else proc.port

            # Non-streamed chat and embeddings, against nginx's fixed JSON.
            proc, port = phase(up.json_port)
            try:
                url = f"http://127.0.0.1:{port}"
                load_run("warmup", url + path_chat, chat, 16, 1, None, headers)
                for c in (1, 16, 64):
                    r = load_run("chat", url + path_chat, chat, c, a.duration, proc, headers)
                    self._record(target, f"chat_c{c}", r.to_dict())
                load_run("warmup", url + path_embed, embed, 16, 1, None, headers)
                r = load_run("embeddings", url + path_embed, embed, 16, a.duration, proc, headers)
                self._record(target, "embed_c16", r.to_dict())
            finally:
                if target.per_upstream:
                    self._stop(target, proc)

            # Streamed chat throughput, against nginx's fixed event stream.
            proc, port = phase(up.sse_port)
            try:
                url = f"http://127.0.0.1:{port}" + path_chat
                load_run("warmup", url, stream, 16, 1, None, headers)
                r = load_run("stream", url, stream, 16, a.duration, proc, headers)
                self._record(target, "stream_c16", r.to_dict())
            finally:
                if target.per_upstream:
                    self._stop(target, proc)

            # Time to first token, against an upstream whose chunks arrive apart.
            proc, port = phase(up.slow_port)
            try:
                run_streams(port, path_chat, slow, headers, 1, 10, 5.0)  # warm the pools
                stats = run_streams(port, path_chat, slow, headers, 1, a.ttft_requests, a.duration)
                self.raw[target.name]["ttft"].append(stats.to_dict())
                if target.is_aifabric:
                    # The same upstream stream translated into the Responses API and into Anthropic's
                    # Messages API, chunk by chunk.
                    for path, body, key in (
                        ("/v1/responses", responses_request(SLOW_TRANSLATED_ROLE), "ttft_responses"),
                        ("/v1/messages", messages_request(SLOW_TRANSLATED_ROLE), "ttft_messages"),
                    ):
                        run_streams(port, path, body, headers, 1, 10, 5.0)
                        stats = run_streams(port, path, body, headers, 1, a.ttft_requests, a.duration)
                        self.raw[target.name][key].append(stats.to_dict())
            finally:
                if target.per_upstream:
                    self._stop(target, proc)
        finally:
            self._stop(target, shared)

    def run(self) -> None:
        a = self.args
        with NginxUpstream() as nginx, SlowStreamUpstream(a.ttft_chunks, a.ttft_interval_ms) as slow:
            up = Upstreams(nginx.json_port, nginx.sse_port, slow.port)
            for rnd in range(1, a.rounds + 1):
                for target in self.targets:
                    entry = self.raw[target.name]
                    if entry["error"]:
                        continue
                    t0 = time.monotonic()
                    print(f"round {rnd}/{a.rounds}: {target.label} ...", end=" ", flush=True)
                    try:
                        self.one_round(target, up)
                    except Exception as exc:  # a peer that cannot start must not sink the whole run
                        entry["error"] = f"{type(exc).__name__}: {exc}"
                        print(f"FAILED ({entry['error'][:300]})", flush=True)
                        continue
                    c64 = entry["runs"]["chat_c64"][-1]
                    print(
                        f"c64 {c64['rps']:,.0f} RPS, CPU/req {c64['cpu_us_per_request'] or 0:.0f} µs "
                        f"({time.monotonic() - t0:.0f} s)",
                        flush=True,
                    )


def select_targets(args: argparse.Namespace) -> list[Target]:
    targets = all_targets(args.aifabric_workers, args.litellm_workers)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {t.name for t in targets}
        if unknown:
            raise SystemExit(f"unknown target(s) {sorted(unknown)}; known: {[t.name for t in targets]}")
        targets = [t for t in targets if t.name in wanted]
    if any(t.is_aifabric for t in targets):
        why = aifabric_available()
        if why is not None:
            print(f"skipping aifabric: {why}", flush=True)
            targets = [t for t in targets if not t.is_aifabric]
    return targets


def update_readme(report: str) -> None:
    """Replace the results section of bench/README.md (between the markers) with this run's report."""
    if not README.exists():
        return
    text = README.read_text()
    if BEGIN not in text or END not in text:
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s runs (about 3 minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 2; quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per wrk run (default 5; quick 2)")
    ap.add_argument("--only", default="", help="comma-separated target names (direct, aifabric-w1, ...)")
    ap.add_argument("--aifabric-workers", default="1,2", help="worker counts of aifabric (default 1,2)")
    ap.add_argument("--litellm-workers", default="1,2", help="worker counts of LiteLLM (default 1,2)")
    ap.add_argument("--ttft-requests", type=int, default=None, help="streams timed per round (default 300)")
    ap.add_argument("--ttft-chunks", type=int, default=8)
    ap.add_argument("--ttft-interval-ms", type=float, default=2.0)
    ap.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds a target may take to be ready"
    )
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded default's section")
    ap.add_argument("--embedded-only", action="store_true", help="only the embedded default's section")
    ap.add_argument(
        "--embedded-ready-timeout",
        type=float,
        default=900.0,
        help="seconds `aifabric up` may take to be ready (a first run builds nothing: make does)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    ap.add_argument("--no-readme", action="store_true", help="do not refresh bench/README.md's results")
    ap.add_argument("--render", type=Path, help="print the report of a saved latest.json and exit")
    ap.add_argument(
        "--rewrite",
        action="store_true",
        help="with --render: also rewrite --out and bench/README.md's results",
    )
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.ttft_requests = args.ttft_requests or (100 if args.quick else 300)
    args.aifabric_workers = [int(w) for w in args.aifabric_workers.split(",") if w]
    args.litellm_workers = [int(w) for w in args.litellm_workers.split(",") if w]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C would, so every started target and upstream is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.render:
        saved = json.loads(args.render.read_text())
        report = render_embedded(saved) if "chat" in saved else render(saved)
        print(report)
        if args.rewrite:
            args.out.write_text("# Benchmark: latest run\n\n" + report)
            update_readme(report)
        return 0
    if args.embedded_only:
        return embedded_section(args)
    targets = select_targets(args)
    info = machine.describe(sys.executable)
    busy_before = machine.busy_fraction()
    info["busy_before"] = busy_before
    info["busy"] = busy_before > BUSY_THRESHOLD
    if busy_before > BUSY_THRESHOLD:
        print(f"warning: the machine is {busy_before:.0%} busy before the run", flush=True)
    workdir = RESULTS / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    bench = Bench(args, targets, workdir)
    try:
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted: reporting what was measured", flush=True)
    info["loadavg_1m_at_end"] = os.getloadavg()[0]
    raw = {
        "machine": info,
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "quick": args.quick,
            "ttft_requests": args.ttft_requests,
            "ttft_chunks": args.ttft_chunks,
            "ttft_interval_ms": args.ttft_interval_ms,
            "elapsed_s": round(time.monotonic() - t0, 1),
        },
        "targets": list(bench.raw.values()),
    }
    report = render(raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Benchmark: latest run\n\n" + report)
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    if not args.quick and not args.no_readme and not args.only:
        update_readme(report)
    print()
    print(report)
    print(f"written to {args.out} and {args.out.with_suffix('.json')}")
    # The embedded section runs the real models for minutes: part of a whole run, not of `--only` (a
    # run narrowed to some gateway targets), unless asked for with --embedded-only.
    if not args.no_embedded and not args.only:
        return embedded_section(args)
    return 0


def embedded_section(args: argparse.Namespace) -> int:
    """`aifabric up` on the real models: written to embedded-latest.md/.json beside --out."""
    print("embedded default (aifabric up, real models) ...", flush=True)
    info = machine.describe(sys.executable)
    busy_before = machine.busy_fraction()
    workdir = RESULTS / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    raw = run_embedded(
        workdir, quick=args.quick, duration=args.duration, ready_timeout=args.embedded_ready_timeout
    )
    info["busy_before"] = busy_before
    info["busy"] = busy_before > BUSY_THRESHOLD
    info["loadavg_1m_at_end"] = os.getloadavg()[0]
    raw["machine"] = info
    report = render_embedded(raw)
    out = args.out.with_name("embedded-latest.md")
    out.write_text("# Benchmark: the embedded default, latest run\n\n" + report)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print()
    print(report)
    print(f"written to {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
