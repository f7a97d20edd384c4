#!/usr/bin/env python3
"""Two builds of aifabric on the same load, alternating: did a change make the hot path slower?

    git worktree add --detach /tmp/old d5d8ada          # the build to compare with
    .venv/bin/python bench/compare.py --baseline /tmp/old/src
    .venv/bin/python bench/compare.py --baseline /tmp/old/src --usage off --rounds 5

Each round starts `aifabric serve --workers 2` on the bench's fabric file (bench/run.py's: nginx
upstreams with fixed bodies) once per build, this checkout's first in odd rounds and the baseline's
first in even ones (drift of the machine's load falls on both), and drives it with wrk: non-streamed
chat at c=64, streamed chat and embeddings at c=16. It prints the medians of RPS and CPU per request
(the whole process tree, from /proc) per build and workload, and the ratio new/old.

`--usage off` adds `usage: "off"` to this checkout's fabric file (no usage ledger), the way to compare
with a build from before the ledger existed; the baseline gets the file without the keys it may not
know (`apis:`, `usage:`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib.measure import load_run  # noqa: E402
from benchlib.process import TargetProcess  # noqa: E402
from benchlib.targets import CHAT_ROLE, EMBED_ROLE, STREAM_ROLE, Upstreams, aifabric_config, aifabric_exe  # noqa: E402
from benchlib.upstream import NginxUpstream, chat_request, embeddings_request, free_port  # noqa: E402

WORKLOADS: dict[str, tuple[str, str, int]] = {
    "chat": ("/v1/chat/completions", chat_request(CHAT_ROLE), 64),
    "stream": ("/v1/chat/completions", chat_request(STREAM_ROLE, stream=True), 16),
    "embeddings": ("/v1/embeddings", embeddings_request(EMBED_ROLE), 16),
}


def fabric(up: Upstreams, port: int, baseline: bool, usage_off: bool) -> str:
    text = aifabric_config(up, port)
    if baseline:
        return text.replace(", apis: []", "")  # a key older builds reject; that role is not measured here
    return text + ('usage: "off"\n' if usage_off else "")


def run_build(
    label: str, src: Path | None, up: Upstreams, workdir: Path, args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    port = free_port()
    cfg = workdir / f"fabric-{label}-{port}.yaml"
    cfg.write_text(fabric(up, port, src is not None, args.usage == "off"))
    exe = aifabric_exe()
    assert exe is not None, "no aifabric executable (make install)"
    env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), "XDG_DATA_HOME": str(workdir / "data")}
    if src is not None:  # the other build's package ahead of the installed one
        env["PYTHONPATH"] = str(src.resolve())
    argv = [exe, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(args.workers), "--log-level", "error"]
    proc = TargetProcess(label, argv, port, "/health/ready", workdir / f"{label}-{port}.log", env=env)
    proc.start(ready_timeout_s=120)
    out: dict[str, tuple[float, float]] = {}
    try:
        for name, (path, body, connections) in WORKLOADS.items():
            url = f"http://127.0.0.1:{port}{path}"
            load_run("warmup", url, body, 16, 1, None)
            run = load_run(name, url, body, connections, args.duration, proc)
            if run.wrk.errors:
                raise RuntimeError(f"{label} {name}: {run.wrk.errors} errors; log {proc.log_path}")
            out[name] = (run.wrk.rps, run.cpu_us_per_request or 0.0)
    finally:
        proc.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, metavar="SRC", help="the other build's src/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--usage", choices=("default", "off"), default="default", help="this build's ledger")
    args = ap.parse_args()
    if not (args.baseline / "aifabric").is_dir():
        print(f"error: {args.baseline} has no aifabric package (give a checkout's src/)", file=sys.stderr)
        return 2
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="aifabric-bench-compare-") as tmp, NginxUpstream() as nginx:
        up = Upstreams(nginx.json_port, nginx.sse_port, nginx.json_port)
        builds: list[tuple[str, Path | None]] = [("new", None), ("old", args.baseline)]
        for rnd in range(1, args.rounds + 1):
            for label, src in builds if rnd % 2 else builds[::-1]:
                for name, figures in run_build(label, src, up, Path(tmp), args).items():
                    results.setdefault((label, name), []).append(figures)
                    rps, cpu = figures
                    print(f"round {rnd} {label} {name:>10}: {rps:8,.0f} RPS {cpu:6.1f} µs CPU/req")
    print(f"\nmedians over {args.rounds} rounds, --workers {args.workers}, this build's usage {args.usage}:")
    for name in WORKLOADS:
        new, old = (_medians(results[(b, name)]) for b in ("new", "old"))
        rps_ratio = f"{new[0] / old[0]:.2f}x" if old[0] else "-"
        cpu_ratio = f"{new[1] / old[1]:.2f}x" if old[1] else "-"  # no CPU figure: no ratio
        print(
            f"  {name:>10}: RPS {new[0]:8,.0f} vs {old[0]:8,.0f} ({rps_ratio}), "
            f"CPU/req {new[1]:5.1f} vs {old[1]:5.1f} µs ({cpu_ratio})"
        )
    return 0


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


if __name__ == "__main__":
    sys.exit(main())
