"""`aifabric drill` against a real `aifabric up`: the runbook's quarterly failure drill, end to end.

Most tests use a small fabric: one local backend (the ONNX embeddings server, quick to start) and a fake
remote backend that a role falls back to. One runs the drill on the embedded default (real chat models).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import Up

from aifabric.ops.drill import DrillStep, run_drill
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.processes import alive
from aifabric.testing.wait import wait_until

pytestmark = pytest.mark.e2e

SMALL = """
backends:
  emb:
    kind: aifabric-embed
    local: {{engine: aifabric-embed, model: all-minilm-l6-v2-int8, port: 18000}}
    health: {{interval: 0.5}}
  remote: {{kind: vllm, url: "{url}", health: {{interval: 0.5}}}}
roles:
  embeddings-general:
    kind: embeddings
    targets: [{{backend: emb, model: all-minilm-l6-v2-int8}}]
    fallbacks: [embeddings-remote]
  embeddings-remote: {{kind: embeddings, targets: [{{backend: remote, model: e1}}]}}
  embeddings-alone: {{kind: embeddings, targets: [{{backend: emb, model: all-minilm-l6-v2-int8}}]}}
aliases:
  local/embed: embeddings-general
"""


class Small:
    def __init__(self, up: Up, remote: FakeBackend) -> None:
        self.up, self.remote = up, remote

    def drill(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        result = subprocess.run(
            [sys.executable, "-m", "aifabric", "drill", "--url", self.up.base_url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result.returncode, result.stdout, result.stderr

    def local(self) -> dict[str, dict[str, Any]]:
        reply = httpx.get(self.up.base_url + "/admin/backends")
        backends: dict[str, dict[str, Any]] = reply.json()["backends"]
        return backends

    def wait_all_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            view = httpx.get(self.up.base_url + "/status").json()
            if all(b["state"] == "up" for b in view["backends"].values()):
                return
            assert time.monotonic() < deadline, f"not all up: {view['backends']}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Small]:
    tmp = tmp_path_factory.mktemp("drill")
    with FakeBackend(kind="vllm", models=("e1",)) as remote:
        path = tmp / "fabric.yaml"
        path.write_text(SMALL.format(url=remote.url))
        up = Up(tmp, "--config", str(path))
        try:
            up.wait_for("Ctrl-C stops everything.", timeout=120)
            fabric = Small(up, remote)
            fabric.wait_all_up()
            yield fabric
        finally:
            up.stop()
            print(f"--- aifabric up output ---\n{up.output}")


def test_the_drill_passes_reports_detection_fallbacks_and_recovery(small: Small) -> None:
    before = small.up.backend_pids()["emb"]
    code, out, err = small.drill("--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] and report["detected"] and report["recovered"]
    assert report["backend"] == "emb"  # the local backend of a role that has a fallback
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["baseline", "stop emb", "detection", "service while down", "start emb", "recovery"]
    assert all(s["ok"] for s in report["steps"])
    assert "stopped by a drill/operator" in steps["detection"]["detail"]
    assert steps["detection"]["seconds"] is not None and steps["recovery"]["seconds"] is not None
    # While emb was down: the role with a fallback (and its alias) answered through it; the role with
    # nowhere else to go failed, and the report says that was expected.
    assert report["answered"]["embeddings-general"] == "via embeddings-remote/remote"
    assert report["answered"]["local/embed"] == "via embeddings-remote/remote"
    assert list(report["failed"]) == ["embeddings-alone"]
    assert report["expected_failures"] == ["embeddings-alone"]
    # The backend runs again: a new process, ready, and the gateway routes to it.
    after = small.up.backend_pids()["emb"]
    assert after != before and alive(after) and not alive(before)
    # The gateway's probe and the supervisor's own readiness check (each tick) see the new process
    # ready independently: the drill's "recovered" is the gateway's; the supervisor may follow a tick
    # later (seen on a fresh clone: process "loading" while the gateway already served it).
    wait_until(lambda: small.local()["emb"]["process"] == "ready", "the supervisor sees it ready")
    assert small.local() == {"emb": {"process": "ready", "pid": after, "state": "up", "reason": "serving"}}
    served = httpx.post(
        small.up.base_url + "/v1/embeddings", json={"model": "embeddings-alone", "input": "back"}
    )
    assert served.status_code == 200 and served.headers["x-aifabric-backend"] == "emb"
    assert "emb: stopped on request" in small.up.output
    assert "emb: starting again on request" in small.up.output


def test_the_report_for_a_terminal_says_each_step_and_the_verdict(small: Small) -> None:
    code, out, _ = small.drill()
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"failure drill on {small.up.base_url}"
    for step in ("baseline", "stop emb", "detection", "service while down", "start emb", "recovery"):
        assert any(line.startswith(f"  PASS  {step} ") for line in lines), out
    assert "failed: embeddings-alone (no fallback)" in out
    assert lines[-1].startswith("drill PASSED on emb: down detected in ")
    assert "give them a fallback role on another backend" in lines[-1]


def test_a_drill_that_fails_midway_still_starts_the_backend_again(small: Small) -> None:
    seen: list[DrillStep] = []

    def on_step(step: DrillStep) -> None:
        seen.append(step)
        if step.name == "stop emb":  # the operator's terminal dies right after the stop
            raise RuntimeError("interrupted")

    before = small.local()["emb"]["pid"]
    with pytest.raises(RuntimeError, match="interrupted"):
        asyncio.run(run_drill(small.up.base_url, on_step=on_step))
    assert [s.name for s in seen] == ["baseline", "stop emb", "start emb"]
    assert "starting emb again" in seen[-1].detail
    deadline = time.monotonic() + 60
    # A new process, ready, and the gateway routing to it again (not the old one, not yet told).
    while (now := small.local()["emb"])["pid"] == before or now["state"] != "up" or now["process"] != "ready":
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    assert now["pid"] is not None and alive(now["pid"]) and not alive(before)


def test_a_fabric_that_is_not_healthy_is_not_drilled(small: Small) -> None:
    pid = small.up.backend_pids()["emb"]
    small.remote.set(loading=True)  # the remote backend says it is loading its model
    try:
        deadline = time.monotonic() + 30
        while httpx.get(small.up.base_url + "/status").json()["backends"]["remote"]["state"] != "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        code, out, _ = small.drill()
    finally:
        small.remote.set(loading=False)
    assert code == 2, out
    assert "FAIL  baseline" in out and "the fabric is not healthy; fix that first" in out
    assert "remote: loading" in out
    assert "stop emb" not in out
    assert small.up.backend_pids()["emb"] == pid and small.local()["emb"]["process"] == "ready"
    small.wait_all_up()


def test_a_remote_backend_cannot_be_drilled(small: Small) -> None:
    code, out, _ = small.drill("--backend", "remote")
    assert code == 2
    assert "'remote' is a remote backend of this fabric; `aifabric up` runs: emb" in out


def test_the_drill_on_the_default_fabric_stops_chat_fast_and_chat_deep_answers(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        up.wait_for("Ctrl-C stops everything.")
        before = up.backend_pids()["local-chat-fast"]
        result = subprocess.run(
            [sys.executable, "-m", "aifabric", "drill", "--url", up.base_url, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr + up.output
        report = json.loads(result.stdout)
        assert report["backend"] == "local-chat-fast"  # chat-fast falls back to chat-deep
        assert report["answered"]["chat-fast"] == "via chat-deep/local-chat-deep"
        assert report["answered"]["local/chat"] == "via chat-deep/local-chat-deep"
        assert report["failed"] == {}
        after = up.backend_pids()["local-chat-fast"]
        assert after != before and alive(after)
    finally:
        assert up.stop() == 0
