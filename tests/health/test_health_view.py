"""The health view without sockets: states folded into exit status, targets' ejection shown."""

from __future__ import annotations

from health_support import estate

from aifabric.core import BackendHealth, BackendState, FailureClass, ProbeResult
from aifabric.health.report import exit_status, health_view, render_table
from aifabric.routing.outlier import OutlierDetector
from aifabric.routing.target import TargetState

CONFIG = estate(
    {"gpu": ("box", "vllm", "http://127.0.0.1:9/v1"), "embed": ("box", "tei", "http://127.0.0.1:8/v1")},
    roles={"chat-fast": ("gpu", "Qwen2.5-7B-Instruct-AWQ"), "embeddings-general": ("embed", "bge")},
)


def test_never_probed_is_broken_and_an_empty_estate_is_fine() -> None:
    healths = {"gpu": BackendHealth("gpu"), "embed": BackendHealth("embed")}
    view = health_view(healths, CONFIG, now=0.0)
    assert view["exit_code"] == 2
    assert view["backends"]["gpu"]["reason"] == "not probed yet"
    assert view["backends"]["gpu"]["models"] == [{"configured": "Qwen2.5-7B-Instruct-AWQ", "served": None}]
    assert exit_status({}) == 0
    assert render_table(health_view({}, CONFIG, now=0.0))[-1] == "no backends: ok (exit 0)"


def test_the_worst_backend_decides() -> None:
    up = ProbeResult(True, BackendState.UP, "serving", 0.002, ("Qwen2.5-7B-Instruct-AWQ",))
    loading = ProbeResult(
        False, BackendState.LOADING, "loading its model", 0.002, failure=FailureClass.LOADING
    )
    gpu, embed = BackendHealth("gpu"), BackendHealth("embed")
    gpu.apply_probe(up, 1.0)
    embed.apply_probe(up, 1.0)
    assert exit_status({"gpu": gpu, "embed": embed}) == 0
    embed.apply_probe(loading, 2.0)
    view = health_view({"gpu": gpu, "embed": embed}, CONFIG, now=5.0)
    assert (view["exit_code"], view["status"]) == (1, "attention")
    assert view["counts"] == {"up": 1, "loading": 1}
    assert view["backends"]["embed"]["for_seconds"] == 3.0
    assert view["backends"]["gpu"]["models"] == [{"configured": "Qwen2.5-7B-Instruct-AWQ", "served": True}]
    assert "    why: loading its model" in render_table(view)


def test_targets_show_their_ejection() -> None:
    gpu = BackendHealth("gpu")
    target = TargetState(
        role="chat-fast",
        backend=CONFIG.backends["gpu"],
        model="Qwen2.5-7B-Instruct-AWQ",
        health=gpu,
        detector=OutlierDetector(consecutive_failures=1, base_ejection=10.0),
    )
    target.on_start(0.0).failure(FailureClass.TIMEOUT, 0.0)
    view = health_view({"gpu": gpu}, CONFIG, now=4.0, targets=[target])
    seen = view["targets"]["chat-fast/gpu/Qwen2.5-7B-Instruct-AWQ"]
    assert seen["available"] is False
    assert seen["outlier"] == "ejected"
    assert seen["ejected_for_seconds"] == 6.0
    assert (seen["ejections"], seen["failures"], seen["outstanding"]) == (1, 1, 0)
    assert "targets" not in health_view({"gpu": gpu}, CONFIG, now=4.0)
