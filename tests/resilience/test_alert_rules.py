"""The runbook's alerting thresholds as rules over a health snapshot, and fire-once/resolve-once.
Pure: no sockets, the clock is a number passed in."""

from __future__ import annotations

from typing import Any

import pytest
from resilience_support import load

from aifabric.alerts import rules
from aifabric.alerts.rules import AlertTracker, Severity, evaluate, gateway_down
from aifabric.core import BackendHealth, BackendState

ESTATE_TEXT = """
hosts:
  motoko:     {address: motoko.example, always_on: true}
  wintermute: {address: wintermute.example, always_on: false}
  armitage:   {address: armitage.example, always_on: false}
backends:
  armitage-vllm:   {host: armitage,   kind: vllm, url: "http://armitage.example:8000/v1"}
  wintermute-vllm: {host: wintermute, kind: vllm, url: "http://wintermute.example:8000/v1"}
  motoko-embed:    {host: motoko,     kind: vllm, url: "http://motoko.example:8200/v1"}
  openai:          {kind: openai, url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}
roles:
  chat-fast: {kind: chat, targets: [{backend: armitage-vllm, model: Qwen}], fallbacks: [openai/strong]}
  chat-deep: {kind: chat, targets: [{backend: wintermute-vllm, model: Llama}], fallbacks: [openai/strong]}
  embeddings-general: {kind: embeddings, targets: [{backend: motoko-embed, model: bge-base-en-v1.5}]}
  openai/strong: {kind: chat, targets: [{backend: openai, model: gpt-4o}]}
"""
ESTATE = load(ESTATE_TEXT, {"OPENAI_API_KEY": "sk-secret-value"})


def snapshot(**states: BackendState) -> dict[str, BackendHealth]:
    healths = {name: BackendHealth(name, state=BackendState.UP, reason="ok") for name in ESTATE.backends}
    for name, state in states.items():
        healths[name.replace("_", "-")].state = state
        healths[name.replace("_", "-")].reason = "connection refused"
    return healths


def by_rule(healths: dict[str, BackendHealth]) -> dict[str, Severity]:
    return {a.key: a.severity for a in evaluate(healths, ESTATE)}


def test_all_up_raises_nothing() -> None:
    assert evaluate(snapshot(), ESTATE) == []


def test_always_on_backend_down_is_a_warning_with_the_fix() -> None:
    [alert] = evaluate(snapshot(motoko_embed=BackendState.DOWN), ESTATE)
    assert (alert.key, alert.severity) == ("backend_down:motoko-embed", Severity.WARNING)
    assert "motoko-embed on motoko is down: connection refused" in alert.summary
    assert "aifabric health motoko-embed" in alert.fix
    assert "restart the vllm server on motoko" in alert.fix


def test_sleeping_or_down_workstation_is_info_and_says_where_requests_go() -> None:
    for state in (BackendState.ASLEEP, BackendState.DOWN):
        [alert] = evaluate(snapshot(armitage_vllm=state), ESTATE)
        assert (alert.key, alert.severity) == ("workstation_down:armitage-vllm", Severity.INFO)
        assert f"is {state}" in alert.summary
        assert "power armitage on" in alert.fix
        assert "Requests go to openai/strong meanwhile" in alert.fix


def test_two_workstations_asleep_is_not_a_warning() -> None:
    # Both workstations switched off in the evening: expected, not "several backends down".
    alerts = by_rule(snapshot(armitage_vllm=BackendState.ASLEEP, wintermute_vllm=BackendState.ASLEEP))
    assert alerts == {
        "workstation_down:armitage-vllm": Severity.INFO,
        "workstation_down:wintermute-vllm": Severity.INFO,
    }


def test_two_backends_down_is_a_warning_pointing_at_the_network() -> None:
    alerts = evaluate(snapshot(motoko_embed=BackendState.DOWN, openai=BackendState.DOWN), ESTATE)
    several = [a for a in alerts if a.rule == "backends_down"]
    assert [a.severity for a in several] == [Severity.WARNING]
    assert "2 backends are down at once: motoko-embed, openai" in several[0].summary
    assert "tailscale status" in several[0].fix


def test_model_drift_is_a_warning_carrying_the_mismatch_message() -> None:
    healths = snapshot()
    message = (
        "config says bge-base-en-v1.5, motoko-embed serves BAAI/bge-base-en-v1.5: set the target's model "
        "to 'BAAI/bge-base-en-v1.5' in the fabric file, or have motoko-embed serve 'bge-base-en-v1.5'"
    )
    healths["motoko-embed"].mismatches = [message]
    [alert] = evaluate(healths, ESTATE)
    assert (alert.key, alert.severity, alert.fix) == ("model_drift:motoko-embed", Severity.WARNING, message)


def test_loading_degraded_and_unknown_are_not_alerts() -> None:
    healths = snapshot(
        motoko_embed=BackendState.LOADING, armitage_vllm=BackendState.DEGRADED, openai=BackendState.UNKNOWN
    )
    assert evaluate(healths, ESTATE) == []


def test_gateway_down_is_critical_and_never_shows_a_url_password() -> None:
    alert = gateway_down("http://ops:hunter2@motoko:8000", "connection refused")
    assert alert.severity is Severity.CRITICAL
    assert "hunter2" not in alert.summary
    assert "systemctl restart aifabric" in alert.fix


def test_an_alert_fires_once_while_it_lasts_and_resolves_once() -> None:
    tracker = AlertTracker()
    down = snapshot(motoko_embed=BackendState.DOWN)
    [fired] = tracker.update(evaluate(down, ESTATE), now=100.0)
    assert (fired.status, fired.alert.key, fired.alert.since) == (
        "firing",
        "backend_down:motoko-embed",
        100.0,
    )
    for t in (400.0, 700.0, 1000.0):  # every interval while it lasts: nothing new to say
        assert tracker.update(evaluate(down, ESTATE), now=t) == []
    assert [a.key for a in tracker.active] == ["backend_down:motoko-embed"]
    [resolved] = tracker.update(evaluate(snapshot(), ESTATE), now=1300.0)
    assert resolved.status == "resolved"
    assert resolved.to_json()["duration_seconds"] == 1200.0
    assert tracker.update(evaluate(snapshot(), ESTATE), now=1600.0) == []
    assert tracker.active == []


def test_a_second_backend_going_down_adds_the_estate_warning_once() -> None:
    tracker = AlertTracker()
    tracker.update(evaluate(snapshot(motoko_embed=BackendState.DOWN), ESTATE), now=0.0)
    events = tracker.update(
        evaluate(snapshot(motoko_embed=BackendState.DOWN, openai=BackendState.DOWN), ESTATE), now=300.0
    )
    assert sorted((e.status, e.alert.key) for e in events) == [
        ("firing", "backend_down:openai"),
        ("firing", "backends_down:estate"),
    ]
    active = tracker.active
    assert active[0].key == "backend_down:motoko-embed"  # worst first, then the oldest
    assert {a.severity for a in active} == {Severity.WARNING}


def test_tracker_survives_a_round_trip_through_its_state_file_format() -> None:
    tracker = AlertTracker()
    tracker.update([gateway_down("http://gw:8000", "refused")], now=5.0)
    again = AlertTracker.from_json(tracker.to_json())
    assert again.update([gateway_down("http://gw:8000", "refused")], now=10.0) == []
    [resolved] = again.update([], now=20.0)
    assert (resolved.status, resolved.alert.since) == ("resolved", 5.0)
    assert AlertTracker.from_json([{"rule": "x"}, "junk"]).active == []


def test_a_model_on_demand_not_running_raises_nothing_but_one_that_fails_to_start_does() -> None:
    config = load(
        """
backends:
  small: {kind: llama-cpp-python, local: {engine: llama-cpp-python, model: m, port: 18801, start: on_demand}}
roles:
  chat-small: {kind: chat, targets: [{backend: small, model: m}]}
""",
        {},
    )
    small = BackendHealth("small")
    small.mark_idle("stopped after 600s unused (idle_stop); started again on demand", 1.0)
    assert evaluate({"small": small}, config) == []
    small.mark_launching("started for a request", 2.0)
    small.state, small.reason = BackendState.DOWN, "exited with status 1 while loading"
    [alert] = evaluate({"small": small}, config)
    assert (alert.key, alert.severity) == ("backend_down:small", Severity.WARNING)


def test_the_configs_secrets_are_found_once_per_config_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate runs every probe round: the walk of the whole config for its secrets is done once per
    loaded config (a reload's new config is walked again), and a reason quoting a key is masked."""
    walks: list[object] = []
    real = rules.config_secrets

    def counted(config: Any) -> frozenset[str]:
        walks.append(config)
        return real(config)

    monkeypatch.setattr(rules, "config_secrets", counted)
    quoting = snapshot(motoko_embed=BackendState.DOWN)
    quoting["motoko-embed"].reason = "HTTP 401: Incorrect API key provided: sk-secret-value"
    for _ in range(3):
        [alert] = evaluate(quoting, ESTATE)
        assert "sk-secret-value" not in alert.summary and "********" in alert.summary
    assert evaluate(snapshot(), ESTATE) == []
    reloaded = load(ESTATE_TEXT, {"OPENAI_API_KEY": "sk-secret-value"})
    evaluate(quoting, reloaded)
    assert walks == [ESTATE, reloaded]
