#!/usr/bin/env python3
"""Issue 12's speed check: aifabric with keys, limits, budgets and the usage ledger on, against the same
build with them off and against vllm-router, non-streamed chat at c=64 (wrk, nginx upstream).

    .venv/bin/python bench/tenancy.py                 # 3 rounds of 5 s per target
    .venv/bin/python bench/tenancy.py --duration 3 --rounds 1 --workers 2
    .venv/bin/python bench/tenancy.py --modes off,on --baseline /tmp/old/src   # before/after in one run

Targets, each `aifabric serve --workers N` on the bench's fabric file:
    off     no api key, `usage: off` (no ledger, no budgets): the baseline
    ledger  the SQLite usage ledger, prices and a budget, and no key or limits (`--modes off,ledger,on`)
    keys    a master key and the limits, and no ledger (`--modes off,keys,ledger,on`: what each part costs)
    on      a master key sent by every request, per-role limits (rpm/tpm, far above the load), prices
            on the targets, a budget on the backend (far above the spend), the SQLite usage ledger
and vllm-router (Rust) as the bar. Per target: RPS, CPU per request (the whole process tree), and for
`on` the ledger's rows against the requests wrk counted (every request must be there: no lost rows)
and its peak RSS (the ledger's queue is bounded).

Writes bench/results/tenancy-latest.md and .json (`--out`): the medians, every round's line and the
machine's conditions (cores, load before and after), like the other sections of the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib import machine, procstat  # noqa: E402
from benchlib.measure import load_run  # noqa: E402
from benchlib.process import TargetProcess  # noqa: E402
from benchlib.targets import CHAT_ROLE, Upstreams, aifabric_config, aifabric_exe, make_vllm_router  # noqa: E402
from benchlib.upstream import SERVED_MODEL, NginxUpstream, chat_request, free_port  # noqa: E402

KEY = "sk-bench-tenancy-0b7e"


ROUTER_TRIES = 3  # runs of vllm-router a round, the best kept (see where it is measured)


def fabric(up: Upstreams, port: int, mode: str, ledger: Path) -> str:
    text = aifabric_config(up, port)
    if mode == "off":
        return text + 'usage: "off"\n'
    if mode in ("on", "keys"):
        text = text.replace("  port: ", f'  api_keys: ["{KEY}"]\n  port: ', 1)
    text = text.replace(
        f'bench-json: {{kind: vllm, url: "http://127.0.0.1:{up.json_port}/v1"}}',
        f'bench-json: {{kind: vllm, url: "http://127.0.0.1:{up.json_port}/v1", budget: 1000000/day}}',
    )
    text = text.replace(
        f"targets: [{{backend: bench-json, model: {SERVED_MODEL}}}]",
        f"targets: [{{backend: bench-json, model: {SERVED_MODEL}, price: {{input: 0.15, output: 0.6}}}}]"
        + ("\n    limits: {rpm: 100000000, tpm: 1000000000}" if mode in ("on", "keys") else ""),
        1,
    )
    return text + ('usage: "off"\n' if mode == "keys" else f"usage: {ledger}\n")


def start_aifabric(
    up: Upstreams, workers: int, mode: str, workdir: Path, src: Path | None = None
) -> tuple[TargetProcess, Path]:
    port = free_port()
    ledger = workdir / f"usage-{port}.db"
    cfg = workdir / f"fabric-{port}.yaml"
    cfg.write_text(fabric(up, port, mode, ledger))
    exe = aifabric_exe()
    assert exe is not None, "no aifabric executable (make install)"
    argv = [exe, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "error"]
    name = f"aifabric-w{workers}-{mode}"
    env = {"XDG_STATE_HOME": str(workdir / "state"), "XDG_DATA_HOME": str(workdir / "data")}
    if src is not None:  # another build's package (a checkout's src/) ahead of the installed one
        env["PYTHONPATH"] = str(src.resolve())
        name += "-baseline"
    proc = TargetProcess(
        name, argv, port, "/health/ready", workdir / f"{name}.log", env={**os.environ, **env}
    )
    proc.start(ready_timeout_s=120)
    return proc, ledger


def ledger_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM aifabric_usage").fetchone()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument(
        "--modes",
        default="off,on",
        help="off, ledger (ledger, prices, budgets only), keys (key and limits only), on (all)",
    )
    ap.add_argument("--no-router", action="store_true", help="skip vllm-router (its venv needs PyPI once)")
    ap.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="also run each mode on another build: the src/ of a checkout (`git worktree add DIR COMMIT`), "
        "interleaved with this one in every round, shown as MODE@base",
    )
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "tenancy-latest.md")
    args = ap.parse_args()
    body = chat_request(CHAT_ROLE)
    results: dict[str, list[tuple[float, float]]] = {}
    checks: list[str] = []
    rounds: list[dict[str, object]] = []  # every target's figures per round, for the .json
    lines: list[str] = []  # and as printed, for the .md
    info = machine.describe(sys.executable)
    info["busy_before"] = machine.busy_fraction()
    with tempfile.TemporaryDirectory(prefix="aifabric-bench-tenancy-") as tmp, NginxUpstream() as nginx:
        workdir = Path(tmp)
        up = Upstreams(nginx.json_port, nginx.sse_port, nginx.json_port)
        for rnd in range(1, args.rounds + 1):
            builds = (None, args.baseline) if args.baseline is not None else (None,)
            runs = [(mode, src) for mode in args.modes.split(",") for src in builds]
            order = runs if rnd % 2 else runs[::-1]  # alternate: drift of the machine's load
            for mode, src in order:
                label = f"{mode}@base" if src is not None else mode
                proc, ledger = start_aifabric(up, args.workers, mode, workdir, src)
                headers = {"Authorization": f"Bearer {KEY}"} if mode in ("on", "keys") else {}
                url = f"http://127.0.0.1:{proc.port}/v1/chat/completions"
                try:
                    warm = load_run("warmup", url, body, 16, 1, None, headers)
                    run = load_run("chat", url, body, args.concurrency, args.duration, proc, headers)
                    rss = procstat.peak_rss_mib(proc.sample())
                finally:
                    proc.stop()  # SIGTERM: the ledger writes what is queued before the workers exit
                results.setdefault(label, []).append((run.wrk.rps, run.cpu_us_per_request or 0.0))
                errors = run.wrk.errors
                cpu = run.cpu_us_per_request or 0.0
                line = f"round {rnd} {label:>3}: {run.wrk.rps:8,.0f} RPS, {cpu:6.0f} µs CPU/req"
                line += f", errors {errors}, peak RSS {rss[1]:.0f} MiB in {rss[2]} processes"
                figures: dict[str, object] = {
                    "round": rnd,
                    "target": label,
                    "rps": run.wrk.rps,
                    "cpu_us_per_request": cpu,
                    "errors": errors,
                    "peak_rss_mib": rss[1],
                    "processes": rss[2],
                }
                if mode in ("on", "ledger"):
                    sent = warm.wrk.requests + run.wrk.requests
                    rows = ledger_rows(ledger)
                    # wrk counts requests whose answer it read; one cut off at the end of a run may
                    # still have been answered (and recorded) by the gateway: rows >= sent.
                    line += f", ledger rows {rows:,} for {sent:,} requests"
                    checks.append("ok" if rows >= sent else f"LOST {sent - rows} rows in round {rnd}")
                    figures |= {"ledger_rows": rows, "requests": sent}
                print(line, flush=True)
                lines.append(line)
                rounds.append(figures)
            if not args.no_router:
                router = make_vllm_router().launch(up, workdir)
                assert router is not None
                router.start(ready_timeout_s=120)
                try:
                    url = f"http://127.0.0.1:{router.port}/v1/chat/completions"
                    load_run("warmup", url, body, 16, 1, None)
                    # vllm-router on this machine runs in one of two steady states from one run to
                    # the next (~18k RPS at ~70 µs CPU a request, or ~30k at ~37 µs; seen with the
                    # same process, runs back to back). The bar is what it can do: its best of a few.
                    tries = [
                        load_run("chat", url, body, args.concurrency, args.duration, router)
                        for _ in range(ROUTER_TRIES)
                    ]
                    run = max(tries, key=lambda t: t.wrk.rps)
                finally:
                    router.stop()
                results.setdefault("vllm-router", []).append((run.wrk.rps, run.cpu_us_per_request or 0.0))
                cpu = run.cpu_us_per_request or 0.0
                every = ", ".join(f"{t.wrk.rps:,.0f}" for t in tries)
                line = (
                    f"round {rnd} vllm-router: {run.wrk.rps:8,.0f} RPS, {cpu:6.0f} µs CPU/req "
                    f"(best of {ROUTER_TRIES} runs: {every} RPS)"
                )
                print(line, flush=True)
                lines.append(line)
                rounds.append({"round": rnd, "target": "vllm-router", "rps": run.wrk.rps,
                               "cpu_us_per_request": cpu, "errors": run.wrk.errors})  # fmt: skip
    info["loadavg_1m_at_end"] = os.getloadavg()[0]
    med = {
        k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
        for k, v in results.items()
    }
    ratios: dict[str, float] = {}
    if "on" in med and "off" in med:
        ratios["cpu_per_request_on_off"] = med["on"][1] / med["off"][1]
    if "on@base" in med and "off@base" in med:
        ratios["cpu_per_request_on_off_baseline"] = med["on@base"][1] / med["off@base"][1]
    if "on" in med and "vllm-router" in med:
        # Against the router's best round: its two steady states (above) must not make a goal look met.
        best_router = max(rps for rps, _ in results["vllm-router"])
        ratios["rps_on_vllm_router"] = med["on"][0] / best_router
    ledger_check = ", ".join(dict.fromkeys(checks)) or "not run"
    summary = [f"medians over {args.rounds} rounds, c={args.concurrency}, --workers {args.workers}:"]
    for name, (rps, cpu) in med.items():
        summary.append(f"  {name:>12}: {rps:8,.0f} RPS  {cpu:6.0f} µs CPU/req")
    goals = {
        "cpu_per_request_on_off": "CPU/req on/off: {:.3f} (goal <= 1.10)",
        "cpu_per_request_on_off_baseline": "CPU/req on/off of the baseline: {:.3f}",
        "rps_on_vllm_router": "RPS on/vllm-router (its best round): {:.3f}x (goal >= 1.0)",
    }
    summary += [f"  {goals[name].format(value)}" for name, value in ratios.items()]
    summary.append(f"  ledger: {ledger_check}")
    print("\n" + "\n".join(summary))
    raw: dict[str, object] = {
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rounds": rounds,
        "medians": {k: {"rps": rps, "cpu_us_per_request": cpu} for k, (rps, cpu) in med.items()},
        "ratios": ratios,
        "ledger": ledger_check,
    }
    write_results(args.out, raw, lines, summary)
    return 0 if all(c == "ok" for c in checks) else 1


def write_results(out: Path, raw: dict[str, object], lines: list[str], summary: list[str]) -> None:
    """`out` (.md) and its .json: what the run printed, with the machine it ran on and how busy it was."""
    info = raw["machine"]
    assert isinstance(info, dict)
    busy = float(info["busy_before"])
    text = [
        "# Benchmark: tenancy (keys, limits, budgets, usage ledger), latest run",
        "",
        f"Machine: {machine.describe_line(info)}; busy before the run {busy:.0%}, load average "
        f"{info['loadavg_1m_at_start']:.2f} at the start, {info['loadavg_1m_at_end']:.2f} at the end.",
        "",
        "Command: `" + " ".join(["bench/tenancy.py", *sys.argv[1:]]) + "`",
        "",
        "```",
        *summary,
        "```",
        "",
        "Every round:",
        "",
        "```",
        *lines,
        "```",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    sys.exit(main())
