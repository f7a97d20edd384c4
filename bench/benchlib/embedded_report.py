"""The embedded section's figures as Markdown, and issue 10's goals checked against them."""

from __future__ import annotations

from typing import Any

from benchlib.machine import describe_line
from benchlib.report import markdown_table

# Issue 10's goals on a 2-core machine.
CHAT_SCALING = 2.0  # chat at 8 concurrent >= 2x its single-stream rate (through the gateway)
CHAT_VS_ALONE = 0.10  # ... and within 10% of llama-server alone
EMBED_P50_MS = 10.0  # one embedding through the gateway, p50
EMBED_RPS = 500.0  # 128 concurrent single-sentence requests, with 0 errors
GATEWAY_ADDS = 0.02  # the gateway costs under 2% of either figure


def overhead(direct: float, gateway: float, *, higher_is_better: bool) -> float | None:
    """What the gateway costs as a fraction of the direct figure (negative: it came out ahead)."""
    if direct <= 0:
        return None
    return (direct - gateway) / direct if higher_is_better else (gateway - direct) / direct


def c128_rounds(emb: dict[str, Any]) -> list[dict[str, Any]]:
    """The 128-concurrent pairs of a run ("c128", "c128-2", ...), in the order they ran."""
    return [level for key, level in emb.items() if key == "c128" or key.startswith("c128-")]


def c128_mean(emb: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """The rounds folded into one pair: mean requests/s, errors summed (neither round picked)."""
    rounds = c128_rounds(emb)
    if not rounds:
        return None
    return {
        side: {
            "rps": sum(r[side]["rps"] for r in rounds) / len(rounds),
            "errors": sum(r[side]["errors"] for r in rounds),
        }
        for side in ("direct", "gateway")
    }


def goals(raw: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for each of issue 10's goals; met is None when not measured."""
    out: list[tuple[str, str, bool | None]] = []
    chat = raw.get("chat", {})
    c1, c8 = chat.get("c1"), chat.get("c8")
    if c1 and c8:
        g1, g8, d8 = (
            c1["gateway"]["tokens_per_s"],
            c8["gateway"]["tokens_per_s"],
            c8["direct"]["tokens_per_s"],
        )
        scale = g8 / g1 if g1 > 0 else 0.0
        out.append(("chat at 8 concurrent >= 2x single stream", f"{scale:.2f}x", scale >= CHAT_SCALING))
        lag = overhead(d8, g8, higher_is_better=True)
        shown = "n/a" if lag is None else f"{g8 / d8:.0%} of llama-server alone"
        out.append(
            (
                "chat at 8 concurrent within 10% of llama-server alone",
                shown,
                lag is not None and lag <= CHAT_VS_ALONE,
            )
        )
        errors = sum(level[side]["errors"] for level in chat.values() for side in ("direct", "gateway"))
        out.append(("chat: no failed request", f"{errors:.0f} errors", errors == 0))
    else:
        out.append(("chat at 8 concurrent >= 2x single stream", "not measured", None))
    emb = raw.get("embeddings", {})
    one, many = emb.get("one"), c128_mean(emb)
    if one:
        p50 = one["gateway"]["p50_us"] / 1000
        out.append(("one embedding p50 through the gateway < 10 ms", f"{p50:.2f} ms", p50 < EMBED_P50_MS))
    if many:
        rps, errors = many["gateway"]["rps"], many["gateway"]["errors"]
        out.append(
            (
                "128 concurrent embeddings >= 500/s with 0 errors",
                f"{rps:.0f}/s (mean of {len(c128_rounds(emb))} rounds), {errors:.0f} errors",
                rps >= EMBED_RPS and errors == 0,
            )
        )
    adds: list[float] = []
    if c8:
        lag = overhead(c8["direct"]["tokens_per_s"], c8["gateway"]["tokens_per_s"], higher_is_better=True)
        adds += [lag] if lag is not None else []
    if many:
        lag = overhead(many["direct"]["rps"], many["gateway"]["rps"], higher_is_better=True)
        adds += [lag] if lag is not None else []
    if adds:
        worst = max(adds)
        out.append(
            (
                "the gateway adds < 2% (chat c=8, embeddings c=128)",
                f"at most {worst:+.1%}",
                worst < GATEWAY_ADDS,
            )
        )
    return out


def render_embedded(raw: dict[str, Any]) -> str:
    lines = [
        "## Embedded default (issue 10): real models, through the gateway and straight to each engine",
        "",
    ]
    chat = raw.get("chat", {})
    if chat:
        rows = []
        for key, level in chat.items():
            d, g = level["direct"], level["gateway"]
            lag = overhead(d["tokens_per_s"], g["tokens_per_s"], higher_is_better=True)
            rows.append(
                [
                    key.removeprefix("c"),
                    f"{d['tokens_per_s']:.0f}",
                    f"{g['tokens_per_s']:.0f}",
                    "n/a" if lag is None else f"{lag:+.1%}",
                    f"{d['errors'] + g['errors']:.0f}",
                ]
            )
        lines += [
            "Chat (chat-fast, 64 tokens per request, `ignore_eos`): tokens/s in all.",
            "",
            markdown_table(
                ["concurrent", "llama-server alone", "through the gateway", "gateway costs", "errors"], rows
            ),
            "",
        ]
    emb = raw.get("embeddings", {})
    limit = raw.get("limits", {}).get("onnx_batch")
    if emb:
        rows = []
        one = emb.get("one")
        if one:
            d, g = one["direct"], one["gateway"]
            rows.append(
                [
                    "one sentence, p50 (keep-alive, c=1)",
                    f"{d['p50_us'] / 1000:.2f} ms",
                    f"{g['p50_us'] / 1000:.2f} ms",
                    f"{(g['p50_us'] - d['p50_us']) / 1000:+.2f} ms",
                    "",
                ]
            )
        shown = (
            f"{limit['per_s']:.0f}/s (one run of {limit['batch']:.0f}: {limit['seconds'] * 1000:.0f} ms)"
            if limit
            else ""
        )
        evidence = []
        for n, level in enumerate(c128_rounds(emb), 1):
            d, g = level["direct"], level["gateway"]
            lag = overhead(d["rps"], g["rps"], higher_is_better=True)
            rows.append(
                [
                    f"128 concurrent single sentences, round {n}",
                    f"{d['rps']:.0f}/s ({d['errors']:.0f} errors)",
                    f"{g['rps']:.0f}/s ({g['errors']:.0f} errors)",
                    "n/a" if lag is None else f"{lag:+.1%}",
                    shown if n == 1 else "",
                ]
            )
            if "mean_batch" in d:
                evidence.append(
                    [
                        f"round {n}",
                        f"{d['mean_batch']:.0f}",
                        f"{g['mean_batch']:.0f}",
                        f"{d['embed_cpu_ms']:.2f} ms",
                        f"{g['embed_cpu_ms']:.2f} ms",
                        f"{g['gateway_cpu_ms']:.2f} ms",
                    ]
                )
        lines += [
            "Embeddings (all-MiniLM-L6-v2 int8 ONNX, one sentence per request, wrk).",
            "",
            markdown_table(
                ["what", "embeddings server alone", "through the gateway", "gateway costs", "one ONNX batch"],
                rows,
            ),
            "",
        ]
        if evidence:
            lines += [
                "At 128 concurrent, what does not depend on timing noise: the mean batch the embeddings "
                "server formed (model runs and inputs from its /health), and the CPU each process spent "
                "per request.",
                "",
                markdown_table(
                    [
                        "",
                        "mean batch, alone",
                        "mean batch, via gateway",
                        "server CPU/req, alone",
                        "server CPU/req, via gateway",
                        "gateway CPU/req",
                    ],
                    evidence,
                ),
                "",
            ]
    lines += ["Issue 10's goals:", ""]
    rows = [
        [goal, measured, {True: "met", False: "NOT met", None: "-"}[met]]
        for goal, measured, met in goals(raw)
    ]
    lines += [markdown_table(["goal", "measured", ""], rows), ""]
    info = raw.get("machine")
    if info:
        busy = (
            f"; the machine was {info['busy_before']:.0%} busy before it (other processes)"
            if info.get("busy")
            else ""
        )
        lines += [
            f"{describe_line(info)}; load average {info['loadavg_1m_at_end']:.1f} at the end{busy}.",
            "",
        ]
    if "ready_s" in raw:
        lines.append(
            f"`aifabric up` ready in {raw['ready_s']:.1f} s; section took {raw.get('elapsed_s', 0):.0f} s."
        )
    return "\n".join(lines)
