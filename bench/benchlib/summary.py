"""The report of a benchmark run: tables with spreads, ratios against direct and each peer, goals.

Works on the plain JSON-able dict that `bench/run.py` writes to results/latest.json, so a report
can be re-rendered from a saved run (`bench/run.py --render results/latest.json`) and tested
without running anything.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from benchlib.report import Spread, fmt_num, fmt_ratio, fmt_spread, markdown_table

Raw = dict[str, Any]
TargetRaw = dict[str, Any]

CHAT_LOADS = ("chat_c1", "chat_c16", "chat_c64")


def _field(t: TargetRaw, load: str, key: str) -> Spread | None:
    return Spread.of([r.get(key) for r in t.get("runs", {}).get(load, [])])


def _ttft(t: TargetRaw, key: str, runs: str = "ttft") -> Spread | None:
    return Spread.of([r.get(key) for r in t.get(runs, []) if r.get("count", 0) > 0])


def _mean(s: Spread | None) -> float | None:
    return None if s is None else s.mean


def _direct(raw: Raw) -> TargetRaw | None:
    return next((t for t in raw["targets"] if t["name"] == "direct"), None)


def _added(
    t: TargetRaw, direct: TargetRaw | None, get: Callable[[TargetRaw], Spread | None]
) -> Spread | None:
    """What the target adds to a latency, per round, against direct's mean."""
    if t["name"] == "direct" or direct is None:
        return None
    base = get(direct)
    mine = get(t)
    if base is None or mine is None:
        return None
    return Spread(mine.mean - base.mean, mine.low - base.mean, mine.high - base.mean, mine.n)


def _errors(t: TargetRaw) -> int:
    n = sum(int(r.get("errors", 0)) for runs in t.get("runs", {}).values() for r in runs)
    return n + sum(
        int(r.get("errors", 0)) for key in ("ttft", "ttft_responses", "ttft_messages") for r in t.get(key, [])
    )


def chat_table(raw: Raw) -> str:
    direct = _direct(raw)
    rows = []
    for t in raw["targets"]:
        if t.get("error") and not t.get("runs"):
            rows.append([t["label"], f"failed: {t['error'][:60]}"] + ["-"] * 6)
            continue
        added = _added(t, direct, lambda x: _field(x, "chat_c1", "p50_us"))
        rows.append(
            [
                t["label"],
                *(fmt_spread(_field(t, load, "rps")) for load in CHAT_LOADS),
                fmt_spread(_field(t, "chat_c1", "p50_us"), 1e-3, " ms"),
                fmt_spread(added, 1e-3, " ms"),
                fmt_spread(_field(t, "chat_c64", "p99_us"), 1e-3, " ms"),
                fmt_spread(_field(t, "chat_c64", "cpu_us_per_request"), 1.0, " µs"),
                str(_errors(t)),
            ]
        )
    return markdown_table(
        [
            "target",
            "RPS c=1",
            "RPS c=16",
            "RPS c=64",
            "p50 c=1",
            "added p50 c=1",
            "p99 c=64",
            "CPU/req c=64",
            "errors",
        ],
        rows,
    )


def stream_table(raw: Raw) -> str:
    direct = _direct(raw)
    rows = []
    for t in raw["targets"]:
        if t.get("error") and not t.get("runs"):
            continue
        added_ttft = _added(t, direct, lambda x: _ttft(x, "ttft_p50_us"))
        rows.append(
            [
                t["label"],
                fmt_spread(_field(t, "stream_c16", "rps")),
                fmt_spread(_field(t, "stream_c16", "cpu_us_per_request"), 1.0, " µs"),
                fmt_spread(_ttft(t, "ttft_p50_us"), 1e-3, " ms"),
                fmt_spread(added_ttft, 1e-3, " ms"),
                fmt_spread(_ttft(t, "total_p50_us"), 1e-3, " ms"),
                fmt_spread(_field(t, "embed_c16", "rps")),
                fmt_spread(_field(t, "embed_c16", "cpu_us_per_request"), 1.0, " µs"),
            ]
        )
    return markdown_table(
        [
            "target",
            "stream RPS c=16",
            "CPU/req stream",
            "TTFT p50 c=1",
            "added TTFT p50",
            "stream total p50",
            "embeddings RPS c=16",
            "CPU/req embeddings",
        ],
        rows,
    )


def foreign_shares(t: TargetRaw) -> list[float]:
    return [float(r.get("foreign_share", 0.0)) for runs in t.get("runs", {}).values() for r in runs]


def footprint_table(raw: Raw) -> str:
    rows = []
    for t in raw["targets"]:
        if t.get("error") and not t.get("runs"):
            continue
        shares = foreign_shares(t)
        others = "-" if not shares else f"{statistics.fmean(shares):.0%} (max {max(shares):.0%})"
        if t["name"] == "direct":
            rows.append([t["label"], "-", "-", "-", "-", others])
            continue
        rows.append(
            [
                t["label"],
                str(t.get("procs", 0)),
                f"{fmt_num(t.get('rss_max_mib', 0.0))} MB",
                f"{fmt_num(t.get('rss_total_mib', 0.0))} MB",
                fmt_spread(Spread.of(t.get("ready_s", [])), 1.0, " s"),
                others,
            ]
        )
    return markdown_table(
        [
            "target",
            "processes",
            "peak RSS, largest process",
            "peak RSS, all processes",
            "start to ready",
            "others' CPU during its runs",
        ],
        rows,
    )


def ratio_table(raw: Raw, load: str = "chat_c64") -> str:
    """Row target's RPS divided by the column target's: >1 means the row is faster."""
    measured = [t for t in raw["targets"] if _field(t, load, "rps") is not None]
    rps = {t["name"]: _mean(_field(t, load, "rps")) for t in measured}
    headers = ["RPS ratio, row / column"] + [t["label"] for t in measured]
    rows = []
    for t in measured:
        rows.append([t["label"]] + [fmt_ratio(rps[t["name"]], rps[o["name"]]) for o in measured])
    return markdown_table(headers, rows)


def _find(raw: Raw, name: str) -> TargetRaw | None:
    return next((t for t in raw["targets"] if t["name"] == name and t.get("runs")), None)


def goals(raw: Raw) -> list[tuple[str, str, str, bool | None]]:
    """Issue 5's goals for `aifabric --workers 2`: (goal, wanted, measured, met or None if unknown)."""
    af = _find(raw, "aifabric-w2") or _find(raw, "aifabric-w1")
    if af is None:
        return []
    direct = _direct(raw)
    out: list[tuple[str, str, str, bool | None]] = []

    def add(goal: str, want: str, value: float | None, ok: Callable[[float], bool], unit: str) -> None:
        shown = "-" if value is None else fmt_num(value) + unit
        out.append((goal, want, shown, None if value is None else ok(value)))

    rps = _mean(_field(af, "chat_c64", "rps"))
    vr = _find(raw, "vllm-router")
    vr_rps = _mean(_field(vr, "chat_c64", "rps")) if vr else None
    ratio = None if rps is None or not vr_rps else rps / vr_rps
    add(f"RPS c=64 vs vllm-router ({af['label']})", ">= 0.5x", ratio, lambda v: v >= 0.5, "x")
    workers = af.get("workers", 1)
    ll = _find(raw, f"litellm-w{workers}") or _find(raw, "litellm-w1")
    ll_rps = _mean(_field(ll, "chat_c64", "rps")) if ll else None
    ratio_ll = None if rps is None or not ll_rps else rps / ll_rps
    # Issue 5 gives "about 100x LiteLLM" as what half of vllm-router amounts to, not as a bar of its own.
    out.append(
        (
            f"RPS c=64 vs {ll['label'] if ll else 'LiteLLM'}",
            "about 100x",
            "-" if ratio_ll is None else fmt_num(ratio_ll) + "x",
            None,
        )
    )
    added = _added(af, direct, lambda x: _field(x, "chat_c1", "p50_us"))
    add("added p50 c=1", "< 0.3 ms", None if added is None else added.mean / 1e3, lambda v: v < 0.3, " ms")
    cpu = _mean(_field(af, "chat_c64", "cpu_us_per_request"))
    add("gateway CPU per request (c=64)", "< 250 µs", cpu, lambda v: v < 250, " µs")
    ttft = _added(af, direct, lambda x: _ttft(x, "ttft_p50_us"))
    add(
        "added time to first token",
        "< 1 ms",
        None if ttft is None else ttft.mean / 1e3,
        lambda v: v < 1,
        " ms",
    )
    # The same upstream stream as a translated /v1/responses and /v1/messages one, against direct's
    # chat stream.
    base = _ttft(direct, "ttft_p50_us") if direct is not None else None
    for api, runs in (("/v1/responses", "ttft_responses"), ("/v1/messages", "ttft_messages")):
        translated = _ttft(af, "ttft_p50_us", runs)
        add(
            f"added time to first token, {api} translated",
            "< 1 ms",
            None if translated is None or base is None else (translated.mean - base.mean) / 1e3,
            lambda v: v < 1,
            " ms",
        )
    rss = af.get("rss_max_mib")
    add("peak RSS per worker", "< 100 MB", rss, lambda v: v < 100, " MB")
    ready = af.get("ready_s") or []
    add("start to ready (slowest start)", "< 1 s", max(ready) if ready else None, lambda v: v < 1, " s")
    return out


def goals_table(raw: Raw) -> str:
    rows = [
        [goal, want, shown, "(for scale)" if ok is None else ("met" if ok else "**missed**")]
        for goal, want, shown, ok in goals(raw)
    ]
    if not rows:
        return "aifabric was not measured in this run."
    return markdown_table(["goal (issue 5)", "wanted", "measured", ""], rows)


def render(raw: Raw) -> str:
    """The whole report in Markdown."""
    cfg = raw.get("config", {})
    m = raw.get("machine", {})
    shares = [x for t in raw["targets"] for x in foreign_shares(t)]
    busy_mean = statistics.fmean(shares) if shares else 0.0
    busy_max = max(shares, default=0.0)
    notes = [
        f"Machine: {m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('memory_gib')} GiB, "
        f"Linux {m.get('kernel')}, {m.get('python')}, {m.get('wrk')}, {m.get('nginx')}; {m.get('date')}.",
        f"CPU busy before the run: {float(m.get('busy_before', 0.0)):.0%}; "
        f"load average 1 min at start {float(m.get('loadavg_1m_at_start', 0.0)):.2f}, "
        f"at end {float(m.get('loadavg_1m_at_end', 0.0)):.2f}."
        + (
            f" Other processes used {busy_mean:.0%} of the CPUs on average during the runs "
            f"(at most {busy_max:.0%} in one run)."
            if shares
            else ""
        )
        + (
            " **The machine was busy (shared with other work): figures are pessimistic and noisy.**"
            if busy_mean > 0.15
            else ""
        ),
        f"{cfg.get('rounds')} rounds of {cfg.get('duration_s')} s per wrk run "
        f"({'quick' if cfg.get('quick') else 'full'} run, {fmt_num(float(cfg.get('elapsed_s', 0)))} s "
        "in all); each cell is the mean over rounds with the range in brackets when rounds differ by "
        "more than 1%.",
        "Upstream: nginx (1 worker) answering fixed bodies; the time-to-first-token upstream streams "
        f"{cfg.get('ttft_chunks')} chunks {cfg.get('ttft_interval_ms')} ms apart. "
        "Load and every target share the same cores. "
        "CPU/req = utime+stime of the target's whole process tree during the run / requests.",
    ]
    return "\n".join(
        [
            "## Non-streamed chat (POST /v1/chat/completions)",
            "",
            chat_table(raw),
            "",
            "## Streamed chat and embeddings",
            "",
            stream_table(raw),
            "",
            "## Footprint",
            "",
            footprint_table(raw),
            "",
            "## Ratios: RPS at c=64, row / column",
            "",
            ratio_table(raw),
            "",
            "## aifabric against issue 5's goals",
            "",
            goals_table(raw),
            "",
            "## Conditions",
            "",
            *[f"- {n}" for n in notes],
            "",
        ]
    )
