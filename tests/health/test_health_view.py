"""The health view without sockets: states folded into exit status, targets' ejection shown."""

from __future__ import annotations

from health_support import estate

from aifabric.config.load import load_config_text
from aifabric.core import BackendHealth, BackendState, Dormancy, FailureClass, ProbeResult
from aifabric.health.report import dormancy, exit_status, health_view, render_table
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


SLEEPERS = load_config_text(
    """\
hosts:
  wintermute: {address: 127.0.0.1, always_on: false}
backends:
  workstation: {host: wintermute, kind: vllm, url: "http://127.0.0.1:9/v1"}
  gpu: {kind: vllm, url: "http://127.0.0.1:8/v1", sleep_when_idle: 15m}
  small: {kind: llama-cpp-python, local: {engine: llama-cpp-python, model: m, port: 18801, start: on_demand}}
roles:
  chat-deep: {kind: chat, targets: [{backend: workstation, model: big}]}
  chat-fast: {kind: chat, targets: [{backend: gpu, model: qwen}]}
  chat-small: {kind: chat, targets: [{backend: small, model: m}]}
""",
    "fabric.yaml",
    environ={},
)
REFUSED = ProbeResult(False, BackendState.DOWN, "cannot connect", 0.001, failure=FailureClass.CONNECT)


def test_on_demand_in_the_view_is_the_launchers_definition() -> None:
    """Shown as on demand exactly when the supervisor treats it so (`LocalLaunch.on_demand`): a model
    that shares a group but is not exclusive in it is never stopped, so it is not on demand."""
    config = load_config_text(
        """backends:
  shared: {kind: llama-cpp-python, local: {engine: llama-cpp-python, model: m, port: 18811, group: g}}
  swapped:
    kind: llama-cpp-python
    local: {engine: llama-cpp-python, model: m, port: 18812, group: g, exclusive: true}
roles:
  a: {kind: chat, targets: [{backend: shared, model: m}]}
  b: {kind: chat, targets: [{backend: swapped, model: m}]}
""",
        "fabric.yaml",
        environ={},
    )
    healths = {name: BackendHealth(name, state=BackendState.UP) for name in ("shared", "swapped")}
    view = health_view(healths, config, now=1.0)
    shown = {name: entry.get("on_demand") is not None for name, entry in view["backends"].items()}
    assert shown == {"shared": False, "swapped": True}
    assert all(config.backends[n].local.on_demand is shown[n] for n in shown)  # type: ignore[union-attr]


def test_the_three_sleeps_are_told_apart_in_the_view_and_the_table() -> None:
    assert {str(d) for d in Dormancy} == {"host_off", "engine_asleep", "model_stopped"}
    workstation = BackendHealth("workstation", always_on=False, unhealthy_threshold=1)
    workstation.apply_probe(REFUSED, 1.0)
    gpu = BackendHealth("gpu", state=BackendState.UP, reason="serving")
    gpu.engine_asleep = True
    small = BackendHealth("small")
    small.mark_idle("not running: started when a request needs it", 1.0)
    small.apply_probe(REFUSED, 2.0)  # a refused probe does not make it a powered-off host
    healths = {"workstation": workstation, "gpu": gpu, "small": small}
    view = health_view(healths, SLEEPERS, now=3.0)
    assert {name: entry["state"] for name, entry in view["backends"].items()} == {
        "workstation": "asleep",
        "gpu": "up",
        "small": "asleep",
    }
    assert {name: entry["dormant"] for name, entry in view["backends"].items()} == {
        "workstation": "host_off",
        "gpu": "engine_asleep",
        "small": "model_stopped",
    }
    assert view["backends"]["small"]["on_demand"] == {
        "start": "on_demand",
        "idle_stop": None,
        "group": None,
        "exclusive": False,
    }
    table = "\n".join(render_table(view))
    assert table.count("powered off") == 1
    assert "(engine in sleep mode while idle (sleep_when_idle): the next request wakes it)" in table
    assert "(a model on demand, not running: the next request for it starts it)" in table

    # Another worker sees the model's state through the shared state, without the stop itself.
    shared = BackendHealth("small", state=BackendState.ASLEEP, reason="not running")
    assert dormancy(shared, SLEEPERS.backends["small"]) is Dormancy.MODEL_STOPPED
    woken = BackendHealth("gpu", state=BackendState.UP)
    assert dormancy(woken, SLEEPERS.backends["gpu"]) is None
    down = BackendHealth("workstation", state=BackendState.DOWN)
    assert dormancy(down, SLEEPERS.backends["workstation"]) is None


def test_an_older_gateways_asleep_backend_still_reads_as_a_host_off() -> None:
    """`aifabric status` against a gateway from before `dormant`: asleep meant a host off then."""
    workstation = BackendHealth("workstation", always_on=False, unhealthy_threshold=1)
    workstation.apply_probe(REFUSED, 1.0)
    view = health_view({"workstation": workstation}, SLEEPERS, now=2.0)
    del view["backends"]["workstation"]["dormant"]
    assert "    (a host with always_on: false: expected when it is powered off)" in render_table(view)
