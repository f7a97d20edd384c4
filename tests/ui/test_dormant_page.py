"""Backends that do not serve on purpose, each in its own words: on the status page (real headless
Chromium) and in `/status` (over HTTP), against a real probing gateway with a real local supervisor.

    workstation  vLLM on a host with always_on: false, not answering       asleep  host_off
    gpu          fake vLLM with sleep_when_idle: 1s, put to sleep           up      engine_asleep
    a            model on demand (group gpu0, exclusive), swapped out for b asleep  model_stopped
    b            model on demand (group gpu0, exclusive), idle_stop: 2s     asleep  model_stopped
    c            model on demand, never asked for                           asleep  model_stopped

Models on demand are real processes (the fake backend speaking llama-cpp-python's API) that the
supervisor starts and stops, as under `aifabric up`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_support import Node, dump_dom, wait_for_status

from aifabric.config.load import load_config_text
from aifabric.local.supervisor import Supervisor
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from supervised import on_demand_spec, supervised_gateway

NO_KEYS: dict[str, str] = {}  # no keys configured: operator views answer this machine
ON_DEMAND = "engine: llama-cpp-python, model: m, start: on_demand"
NEVER_STARTED = "not running: started when a request needs it"
SWAPPED = "stopped: b of group gpu0 started (exclusive)"
IDLE_STOPPED = "stopped after 2s unused (idle_stop); started again on demand"


@dataclass
class Sleepers:
    gateway: RunningGateway
    supervisor: Supervisor
    gpu: FakeBackend

    @property
    def url(self) -> str:
        return self.gateway.url

    def status(self) -> dict[str, Any]:
        view: dict[str, Any] = httpx.get(self.url + "/status", timeout=5).json()
        return view

    def ask(self, role: str) -> str:
        raw = self.gateway.openai(timeout=90).chat.completions.with_raw_response.create(
            model=role, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        raw.parse()
        return raw.headers["x-aifabric-backend"]


def fabric(gpu: FakeBackend, ports: dict[str, int]) -> str:
    probe = "health: {interval: 0.5s}"
    group = "group: gpu0, exclusive: true"
    return f"""\
hosts:
  wintermute: {{address: 127.0.0.1, always_on: false}}
backends:
  workstation: {{host: wintermute, kind: vllm, url: "http://127.0.0.1:{ports["workstation"]}/v1", {probe}}}
  gpu: {{kind: vllm, url: "{gpu.url}", sleep_when_idle: 1s, {probe}}}
  a: {{kind: llama-cpp-python, local: {{{ON_DEMAND}, port: {ports["a"]}, {group}}}, {probe}}}
  b: {{kind: llama-cpp-python, local: {{{ON_DEMAND}, port: {ports["b"]}, {group}, idle_stop: 2s}}, {probe}}}
  c: {{kind: llama-cpp-python, local: {{{ON_DEMAND}, port: {ports["c"]}}}, {probe}}}
roles:
  chat-deep: {{kind: chat, targets: [{{backend: workstation, model: big}}]}}
  chat-fast: {{kind: chat, targets: [{{backend: gpu, model: qwen}}]}}
  chat-a: {{kind: chat, targets: [{{backend: a, model: qa}}]}}
  chat-b: {{kind: chat, targets: [{{backend: b, model: qb}}]}}
  chat-c: {{kind: chat, targets: [{{backend: c, model: qc}}]}}
"""


@contextlib.contextmanager
def running(logs: Path) -> Iterator[Sleepers]:
    ports = {name: free_port() for name in ("workstation", "a", "b", "c")}  # nothing listens on them yet
    with FakeBackend(kind="vllm", models=("qwen",)) as gpu:
        config = load_config_text(fabric(gpu, ports), "fabric.yaml", environ={})
        models = {"a": "qa", "b": "qb", "c": "qc"}
        specs = [on_demand_spec(name, ports[name], model) for name, model in models.items()]
        with supervised_gateway(config, specs, logs) as (supervisor, gw):
            yield Sleepers(gw, supervisor, gpu)


def backends_where(sleepers: Sleepers, want: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    """/status once every named backend shows the given fields; the backends part of it."""

    def ready(view: dict[str, Any]) -> bool:
        return all(
            all(view["backends"][name].get(key) == value for key, value in fields.items())
            for name, fields in want.items()
        )

    view = wait_for_status(sleepers.url, NO_KEYS, ready, what)  # type: ignore[arg-type]
    return dict(view["backends"])  # type: ignore[call-overload]


def test_status_tells_each_kind_of_sleep_apart_over_http(tmp_path: Path) -> None:
    with running(tmp_path) as sleepers:
        see_every_kind_of_sleep(sleepers)


def see_every_kind_of_sleep(sleepers: Sleepers) -> None:
    asleep = {"state": "asleep", "dormant": "model_stopped"}
    backends = backends_where(
        sleepers,
        {
            "workstation": {"state": "asleep"},
            "gpu": {"engine_asleep": True},
            "a": {**asleep, "reason": NEVER_STARTED},
            "b": {**asleep, "reason": NEVER_STARTED},
            "c": {**asleep, "reason": NEVER_STARTED},
        },
        "every backend probed, gpu's engine asleep, the models on demand not started",
    )
    assert backends["workstation"]["dormant"] == "host_off"
    assert backends["gpu"]["state"] == "up" and backends["gpu"]["dormant"] == "engine_asleep"
    assert backends["c"]["on_demand"] == {
        "start": "on_demand",
        "idle_stop": None,
        "group": None,
        "exclusive": False,
    }
    assert backends["b"]["on_demand"] == {
        "start": "on_demand",
        "idle_stop": 2.0,
        "group": "gpu0",
        "exclusive": True,
    }
    assert "on_demand" not in backends["gpu"] and "on_demand" not in backends["workstation"]

    # A request for a starts it: serving, not dormant any more.
    assert sleepers.ask("chat-a") == "a"
    backends = backends_where(sleepers, {"a": {"state": "up"}}, "a started and probed up")
    assert backends["a"]["dormant"] is None
    # b of the same exclusive group: a is stopped for it, and says so.
    assert sleepers.ask("chat-b") == "b"
    backends_where(sleepers, {"a": {**asleep, "reason": SWAPPED}}, "a swapped out for b")
    # b, unused for its idle_stop, is stopped too.
    backends_where(sleepers, {"b": {**asleep, "reason": IDLE_STOPPED}}, "b stopped when idle")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Node:
    """The page of an estate showing every kind of sleep at once."""
    asleep = {"state": "asleep", "dormant": "model_stopped"}
    with running(tmp_path_factory.mktemp("logs")) as sleepers:
        assert sleepers.ask("chat-a") == "a"
        assert sleepers.ask("chat-b") == "b"  # a is stopped for b; b stops after 2 s unused
        backends_where(
            sleepers,
            {
                "workstation": {"dormant": "host_off"},
                "gpu": {"dormant": "engine_asleep"},
                "a": {**asleep, "reason": SWAPPED},
                "b": {**asleep, "reason": IDLE_STOPPED},
                "c": {**asleep, "reason": NEVER_STARTED},
            },
            "every kind of sleep at once",
        )
        return dump_dom(sleepers.url + "/ui")


def note(row: Node) -> Node:
    (found,) = [n for n in row.iter() if "data-dormant" in n.attrs]
    return found


def test_a_powered_off_host_reads_as_one(page: Node) -> None:
    row = page.one("tr", data_backend="workstation")
    assert note(row).attrs["data-dormant"] == "host_off"
    assert "a host that may be powered off: expected" in row.text
    assert "(may sleep)" in row.text


def test_an_engine_in_sleep_mode_reads_as_one_not_as_a_host_off(page: Node) -> None:
    row = page.one("tr", data_backend="gpu")
    asleep = row.one("div", data_engine_asleep="")
    assert asleep.attrs["data-dormant"] == "engine_asleep"
    assert asleep.text == "engine in sleep mode (idle): woken by the next request"
    assert row.one("span", data_state="up")
    assert "powered off" not in row.text


@pytest.mark.parametrize(
    ("name", "reason", "settings"),
    [
        ("a", SWAPPED, "started on demand; one at a time in group gpu0"),
        ("b", IDLE_STOPPED, "started on demand; stopped after 2 s unused; one at a time in group gpu0"),
        ("c", NEVER_STARTED, "started on demand"),
    ],
)
def test_a_stopped_model_on_demand_reads_as_one_with_why_it_stopped(
    page: Node, name: str, reason: str, settings: str
) -> None:
    row = page.one("tr", data_backend=name)
    badge = row.one("span", data_state="asleep")
    assert badge.attrs["title"] == "model on demand, not running: the next request for it starts it"
    assert note(row).attrs["data-dormant"] == "model_stopped"
    assert "model on demand, not running: the next request for it starts it" in row.text
    assert reason in row.one("td", **{"class": "reason"}).text
    assert row.one("div", data_on_demand="").text == settings
    assert "powered off" not in row.text and "may sleep" not in row.text


def test_a_role_whose_model_on_demand_is_stopped_is_not_shown_as_failing(page: Node) -> None:
    role = page.one("article", data_role="chat-c")
    row = role.one("tr", data_target="chat-c/c/qc")
    assert row.attrs["data-routing"] == "on-demand"
    assert "☾ model on demand: the next request starts it" in row.text
    banner = role.one("p", data_on_demand_role="")
    assert banner.text == (
        "No target of this role is running: "
        "the next request starts its model on demand and waits while it loads."
    )
    assert "requests to it fail" not in role.text
    (avail,) = [n for n in role.iter() if n.has_class("avail")]
    assert avail.text == "0 of 1 target available" and avail.has_class("warn")
    # A powered-off workstation with no fallback: its requests do fail, and the page says so.
    deep = page.one("article", data_role="chat-deep")
    assert "it has no fallback: requests to it fail." in deep.text
    assert deep.one("tr", data_target="chat-deep/workstation/big").attrs["data-routing"] == "backend-asleep"
