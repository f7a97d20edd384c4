"""The shipped Prometheus rules and Grafana dashboard: valid PromQL (promtool), alerts that fire as the
built-in rules do (promtool test rules), and every metric and label they read really exported by a
running gateway's /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "aifabric-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "aifabric.json"
# Labels Prometheus adds to every scraped series, and the histogram's own.
SCRAPE_LABELS = {"instance", "job", "le"}
_SELECTOR = re.compile(r"\b(aifabric_[a-z_]+)(\{([^}]*)\})?")
_BY = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (make system-deps installs Debian's prometheus package)"
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False, timeout=60)


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in as Grafana would."""
    return expr.replace("$__rate_interval", "5m").replace('"$instance"', '".*"')


def test_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def series(metric: str, values: str, /, **labels: str) -> dict[str, str]:
    """One input series of a promtool rule test, as a gateway (gw2) would export it."""
    labels = labels if metric == "up" else {"instance": "gw2:8000", **labels}
    text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def test_the_rules_fire_as_the_built_in_ones(tmp_path: Path) -> None:
    """The runbook's thresholds, replayed in promtool's rule unit tests."""
    by_name = {r["alert"]: r for r in rules()}

    def expected(alert: str, _value: str = "", **labels: str) -> dict[str, Any]:
        rule = by_name[alert]
        annotations = {}
        for key, template in rule["annotations"].items():
            text = re.sub(r"\{\{ \$labels\.([a-z_]+) \}\}", lambda m: labels.get(m.group(1), ""), template)
            annotations[key] = re.sub(r"\{\{ \$value( \| humanizePercentage)? \}\}", _value, text)
        return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}

    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("up", "0x5", job="aifabric", instance="gw1:8000"),
                    series("up", "1x5", job="aifabric", instance="gw2:8000"),
                    # motoko-embed and box, on always-on hosts, down: two down at once.
                    series("aifabric_backend_state", "1x5", backend="motoko-embed", state="down"),
                    series("aifabric_backend_always_on", "1x5", backend="motoko-embed"),
                    series("aifabric_backend_state", "1x5", backend="box", state="down"),
                    series("aifabric_backend_always_on", "1x5", backend="box"),
                    # armitage on a workstation, asleep: INFO only, and not one of "two or more down".
                    series("aifabric_backend_state", "1x5", backend="armitage", state="asleep"),
                    series("aifabric_backend_always_on", "0x5", backend="armitage"),
                    series("aifabric_backend_model_mismatch", "1x5", backend="motoko-embed"),
                    series("aifabric_backend_model_mismatch", "0x5", backend="box"),
                    # Budgets: box 85% spent (both replicas agree), key team-a over, key cheap at half.
                    series("aifabric_budget_spent_ratio", "0.85x5", kind="backend", name="box", period="day"),
                    {"series": 'aifabric_budget_spent_ratio{instance="gw1:8000", kind="backend", '
                               'name="box", period="day"}', "values": "0.85x5"},
                    series("aifabric_budget_spent_ratio", "1.25x5", kind="key", name="team-a",
                           period="month"),
                    series("aifabric_budget_spent_ratio", "0.5x5", kind="key", name="cheap", period="day"),
                    # Wakes: ws woken once at 1m (on gw2); lab's wake failed once at 2m (on gw1), and
                    # nothing else: the alerts last 15 minutes after the last wake, then resolve.
                    series("aifabric_host_wakes_total", "0 1x30", host="ws", result="sent"),
                    series("aifabric_host_wakes_total", "0x30", host="ws", result="failed"),
                    {"series": 'aifabric_host_wakes_total{instance="gw1:8000", host="lab", result="failed"}',
                     "values": "0 0 1x30"},
                    {"series": 'aifabric_host_wakes_total{instance="gw1:8000", host="lab", result="sent"}',
                     "values": "0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "AifabricGatewayDown",
                     "exp_alerts": [expected("AifabricGatewayDown", job="aifabric", instance="gw1:8000")]},
                    {"eval_time": "3m", "alertname": "AifabricBackendsDown",
                     "exp_alerts": [expected("AifabricBackendsDown", _value="2")]},
                    {"eval_time": "3m", "alertname": "AifabricBackendDown",
                     "exp_alerts": [expected("AifabricBackendDown", backend="box"),
                                    expected("AifabricBackendDown", backend="motoko-embed")]},
                    {"eval_time": "3m", "alertname": "AifabricWorkstationDown",
                     "exp_alerts": [expected("AifabricWorkstationDown", backend="armitage")]},
                    {"eval_time": "3m", "alertname": "AifabricModelDrift",
                     "exp_alerts": [expected("AifabricModelDrift", backend="motoko-embed")]},
                    # 80%: WARNING only; 100% and over: CRITICAL only; under 80%: nothing.
                    {"eval_time": "1m", "alertname": "AifabricBudgetWarning",
                     "exp_alerts": [expected("AifabricBudgetWarning", "85%", kind="backend", name="box",
                                             period="day")]},
                    {"eval_time": "1m", "alertname": "AifabricBudgetSpent",
                     "exp_alerts": [expected("AifabricBudgetSpent", "125%", kind="key", name="team-a",
                                             period="month")]},
                    {"eval_time": "0m", "alertname": "AifabricHostWakeFailed", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "AifabricHostWakeFailed",
                     "exp_alerts": [expected("AifabricHostWakeFailed", host="lab")]},
                    {"eval_time": "25m", "alertname": "AifabricHostWakeFailed", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "AifabricHostWoken",
                     "exp_alerts": [expected("AifabricHostWoken", host="ws")]},
                    {"eval_time": "25m", "alertname": "AifabricHostWoken", "exp_alerts": []},
                    # Nothing before `for` has passed: an alert does not fire on one bad scrape.
                    {"eval_time": "0m", "alertname": "AifabricBackendDown", "exp_alerts": []},
                ],
            }
        ],
    }  # fmt: skip
    test_file = tmp_path / "rules-test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool("test", "rules", str(test_file))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 12
    groups = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": as_promql(e)} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-as-rules.yml"
    path.write_text(yaml.safe_dump(groups))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_importable_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in (
        "role",
        "backend",
        "first byte",
        "overhead",
        "error",
        "attempts",
        "flight",
        "overflow",
        "tokens",
        "cost",
        "wake",
    ):
        assert topic in titles, topic


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Every sample name of a live gateway's /metrics and the labels it carries, after traffic, an
    error and a probe (so that every family has samples)."""
    with FakeBackend(kind="vllm", models=("m1",)) as backend:
        config = load_config_text(
            f"""
hosts: {{ws: {{address: 127.0.0.1, always_on: false, wake: {{command: "true"}}}}}}
backends: {{b: {{host: ws, kind: vllm, url: "{backend.url}", health: {{interval: 100ms}}, budget: 5/day}}}}
roles:
  chat:
    kind: chat
    targets: [{{backend: b, model: m1, price: {{input: 1, output: 2}}}}]
    overflow: {{queue_depth: 8}}
    fallbacks: [spare]
  spare: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
""",
            "f.yaml",
            environ={},
        )
        gw = RunningGateway(config, probe=True).start()
        try:
            body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
            assert (
                httpx.post(gw.url + "/v1/chat/completions", json={**body, "model": "nope"}).status_code == 404
            )
            text = ""

            def scraped() -> bool:
                nonlocal text
                text = httpx.get(gw.url + "/metrics").text
                # ...and the usage ledger wrote the request's row (written off the request path).
                return (
                    "aifabric_backend_transitions_total{" in text and "aifabric_usage_tokens_total{" in text
                )

            wait_until(scraped, "a probe moved the backend out of unknown")
        finally:
            gw.stop()
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-z_]+)(\{(.*)\})?\s", line)
        assert match, line
        labels = set(re.findall(r'([a-z_]+)="', match.group(3) or ""))
        names.setdefault(match.group(1), set()).update(labels)
    return names


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_and_label_used_is_exported(exported: dict[str, set[str]], source: str) -> None:
    exprs = [r["expr"] for r in rules()] if source == "rules" else [as_promql(e) for e in dashboard_exprs()]
    for expr in exprs:
        used = _SELECTOR.findall(expr)
        assert used or expr.startswith("up{"), expr
        labels_here: set[str] = set(SCRAPE_LABELS)
        for name, _, matchers in used:
            assert name in exported, f"{name} is not in /metrics ({expr})"
            keys = set(re.findall(r"([a-z_]+)\s*[=!~]", matchers))
            assert keys <= exported[name] | SCRAPE_LABELS, f"{name} has no label {keys - exported[name]}"
            labels_here |= exported[name]
        for group in _BY.findall(expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                assert label in labels_here, f"by/on ({label}) is no label of the metrics of {expr}"
