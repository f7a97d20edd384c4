"""The embedded section of the benchmark: its chat load client over real HTTP, and its report's goals.

No timing assertions: the chat client is checked to count tokens and errors right against the fake
backend, and the report to compute overheads and goals from the figures it is given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from aifabric.testing.fake_backend import FakeBackend  # noqa: E402
from benchlib.embedded import chat_load  # noqa: E402
from benchlib.embedded_report import goals, overhead, render_embedded  # noqa: E402


def test_the_chat_client_counts_the_tokens_of_every_answer_and_the_failures() -> None:
    with FakeBackend(kind="llamacpp", models=("m",)) as fb:
        fb.set(tokens=5)
        ok = chat_load(fb.port, "m", 4, 2)
        fb.set(fail_first_n=3, fail_status=503)
        failing = chat_load(fb.port, "m", 1, 4)
    assert (ok["requests"], ok["tokens"], ok["errors"]) == (8, 40, 0)
    assert ok["tokens_per_s"] > 0
    assert (failing["tokens"], failing["errors"]) == (5, 3)


def wrk(rps: float, p50_ms: float, errors: int = 0) -> dict[str, float]:
    return {"rps": rps, "p50_us": p50_ms * 1000, "errors": float(errors)}


def chat(tokens_per_s: float, errors: int = 0) -> dict[str, float]:
    return {"tokens_per_s": tokens_per_s, "errors": float(errors)}


RAW: dict[str, Any] = {
    "chat": {
        "c1": {"direct": chat(115), "gateway": chat(114)},
        "c4": {"direct": chat(160), "gateway": chat(158)},
        "c8": {"direct": chat(230), "gateway": chat(227)},
    },
    "embeddings": {
        "one": {"direct": wrk(300, 4.0), "gateway": wrk(280, 4.3)},
        "c128": {"direct": wrk(700, 150), "gateway": wrk(690, 160)},
    },
    "limits": {"onnx_batch": {"batch": 128.0, "seconds": 0.17, "per_s": 752.9}},
    "ready_s": 2.5,
    "elapsed_s": 80,
}


def test_overhead_is_a_fraction_of_the_direct_figure_either_way() -> None:
    assert overhead(200, 190, higher_is_better=True) == 0.05
    assert overhead(4.0, 4.4, higher_is_better=False) == pytest.approx(0.10)
    assert overhead(0, 1, higher_is_better=True) is None


def test_the_goals_are_computed_from_the_figures() -> None:
    met = {goal: (measured, ok) for goal, measured, ok in goals(RAW)}
    assert met["chat at 8 concurrent >= 2x single stream"] == ("1.99x", False)  # 227 / 114
    assert met["chat at 8 concurrent within 10% of llama-server alone"] == (
        "99% of llama-server alone",
        True,
    )
    assert met["one embedding p50 through the gateway < 10 ms"] == ("4.30 ms", True)
    assert met["128 concurrent embeddings >= 500/s with 0 errors"] == (
        "690/s (mean of 1 rounds), 0 errors",
        True,
    )
    assert met["the gateway adds < 2% (chat c=8, embeddings c=128)"] == ("at most +1.4%", True)
    errors = {
        **RAW,
        "embeddings": {**RAW["embeddings"], "c128": {"direct": wrk(700, 150), "gateway": wrk(690, 160, 3)}},
    }
    met = {goal: ok for goal, _, ok in goals(errors)}
    assert met["128 concurrent embeddings >= 500/s with 0 errors"] is False


def test_rounds_of_128_concurrent_are_averaged_not_picked() -> None:
    def evidence(rps: float, batch: float, server_ms: float, gateway_ms: float) -> dict[str, float]:
        return {**wrk(rps, 150), "mean_batch": batch, "embed_cpu_ms": server_ms, "gateway_cpu_ms": gateway_ms}

    raw = {
        **RAW,
        "embeddings": {
            "one": RAW["embeddings"]["one"],
            "c128": {"direct": evidence(600, 64, 2.9, 0.02), "gateway": evidence(500, 62, 3.0, 0.16)},
            "c128-2": {"direct": evidence(400, 70, 3.1, 0.02), "gateway": evidence(500, 60, 3.0, 0.17)},
        },
    }
    met = {goal: measured for goal, measured, _ in goals(raw)}
    assert met["128 concurrent embeddings >= 500/s with 0 errors"] == "500/s (mean of 2 rounds), 0 errors"
    assert met["the gateway adds < 2% (chat c=8, embeddings c=128)"] == "at most +1.3%"  # c8; c128: 0%
    text = render_embedded(raw)
    assert (
        "| 128 concurrent single sentences, round 2 | 400/s (0 errors) | 500/s (0 errors) | -25.0% |  |"
        in text
    )
    assert "| round 1 | 64 | 62 | 2.90 ms | 3.00 ms | 0.16 ms |" in text


def test_the_report_shows_both_paths_the_limit_and_the_goals() -> None:
    text = render_embedded(RAW)
    assert "| 8 | 230 | 227 | +1.3% | 0 |" in text
    assert "| one sentence, p50 (keep-alive, c=1) | 4.00 ms | 4.30 ms | +0.30 ms |  |" in text
    assert "753/s (one run of 128: 170 ms)" in text
    assert "| chat at 8 concurrent >= 2x single stream | 1.99x | NOT met |" in text
    assert "`aifabric up` ready in 2.5 s" in text
