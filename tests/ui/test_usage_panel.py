"""The status page's usage panel, in headless Chromium against a real gateway with a ledger: tokens
and cost per key, and each budget with its spend (a spent one says it is out of routing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stub_gateway import StubGateway, minimal_status
from ui_support import Node, dump_dom, wait_for_status

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

MASTER_KEY = "sk-master-SECRET-71c0"
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}  # the operator views need an admin key


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    with FakeBackend(kind="vllm", models=("m1",)) as cloud, FakeBackend(kind="vllm", models=("m1",)) as box:
        config = load_config_text(
            f"""
gateway: {{api_keys: ["{MASTER_KEY}"], admin_keys: ["{MASTER_KEY}"]}}
backends:
  cloud: {{kind: openai, url: "{cloud.url}", budget: 0.000005/day}}
  box: {{kind: vllm, url: "{box.url}", budget: 20/month}}
roles:
  chat:
    kind: chat
    targets: [{{backend: cloud, model: m1, price: {{input: 1, output: 1}}}}]
    fallbacks: [local]
  local: {{kind: chat, targets: [{{backend: box, model: m1}}]}}
usage: {tmp_path / "usage.db"}
""",
            "fabric.yaml",
            environ={},
        )
        gw = RunningGateway(config).start()
        try:
            client = gw.openai(api_key=MASTER_KEY)
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "one two three"}]
            )
            wait_for_status(
                gw.url, ADMIN, lambda s: bool(s["usage"]["budgets"][1]["exhausted"]), "cloud's budget spent"
            )  # type: ignore[index]
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "four five"}])
            wait_for_status(
                gw.url, ADMIN, lambda s: s["usage"]["written"] == 2, "both requests in the ledger"
            )  # type: ignore[index]
            yield gw
        finally:
            gw.stop()


def test_the_usage_panel_shows_tokens_cost_and_budgets(gateway: RunningGateway) -> None:
    page = dump_dom(gateway.url.replace("http://", f"http://admin:{MASTER_KEY}@") + "/ui")
    panel = page.by_id("usage-body")
    cells = [c.text for c in panel.one("tr", data_key="master").find_all("td")]
    assert cells[0] == "master" and cells[1] == "2"  # the fabric file's key, two requests
    assert int(cells[2]) > 0 and int(cells[3]) > 0
    spent = panel.one("tr", data_budget="backend:cloud")
    assert spent.has_class("bad") and "out of routing" in spent.text and "0.000005/day" in spent.text
    within = panel.one("tr", data_budget="backend:box")
    assert "within" in within.text and "20/month" in within.text
    assert "2 rows written, 0 waiting" in panel.text
    assert MASTER_KEY not in page.text


def test_the_page_says_when_the_ledger_is_off() -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as box:
        config = load_config_text(
            f"""
backends: {{box: {{kind: vllm, url: "{box.url}"}}}}
roles: {{chat: {{kind: chat, targets: [{{backend: box, model: m1}}]}}}}
usage: "off"
""",
            "fabric.yaml",
            environ={},
        )
        gw = RunningGateway(config).start()
        try:
            page: Node = dump_dom(gw.url + "/ui")
        finally:
            gw.stop()
    assert "The usage ledger is off" in page.by_id("usage-body").text


def test_the_usage_of_several_workers_is_said_to_be_summed() -> None:
    """`serve --workers 2` sums its workers' usage in /status (`usage.workers`); an older gateway's
    answer without it is read as the answering worker's own, as it was."""
    gateway = {**minimal_status()["gateway"], "workers": 2, "pid": 41}
    counted = {
        "enabled": True,
        "ledger": "/var/lib/aifabric/usage.db",
        "written": 30,
        "pending": 0,
        "dropped": 0,
        "write_failures": 0,
        "last_error": "",
        "by_key": {
            "team-a": {"requests": 20, "tokens_in": 200, "tokens_out": 100, "cost": 0.5},
            "master": {"requests": 10, "tokens_in": 50, "tokens_out": 40, "cost": 0.25},
        },
        "spend_today": {},
        "budgets": [],
    }
    panels = []
    for usage in ({**counted, "workers": 2}, counted):
        view = minimal_status(gateway=gateway, usage=usage)
        with StubGateway(status=lambda n, v=view: v) as stub:  # type: ignore[misc]
            panels.append(dump_dom(stub.url + "/ui").by_id("usage-body"))
    cells = [c.text for c in panels[0].one("tr", data_key="team-a").find_all("td")]
    assert cells[:5] == ["team-a", "20", "200", "100", "0.5000"]
    assert "30 rows written, 0 waiting" in panels[0].text
    assert "Totals per key and row counts are all 2 workers' since they started" in panels[0].text
    assert "(this refresh answered by pid 41)" in panels[0].text
    assert (
        "Totals per key are this process's (pid 41) since it started; it is one of 2 workers"
        in panels[1].text
    )
