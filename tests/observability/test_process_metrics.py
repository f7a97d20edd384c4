"""The gateway process's own figures on /metrics (`process_*`, `python_gc_*`, as Prometheus' client
libraries name them) from `aifabric serve` and `aifabric up` alike, and the heap settled under both once
they serve (gateway.app.settle_heap: `up` did not, and its gateway's collections cost several times
more), again after a reload."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aifabric.observability.merged import samples
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

FABRIC = """\
backends:
  gpu: {{kind: vllm, url: "{url}"}}
roles:
  {role}:
    kind: chat
    targets: [{{backend: gpu, model: m1}}]
"""


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    with FakeBackend(kind="vllm", models=("m1",)) as fb:
        yield fb


def start(command: str, fabric: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with (tmp_path / f"{command}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "aifabric", command, "--config", str(fabric), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
        )
    url = f"http://127.0.0.1:{port}"

    def live() -> bool:
        assert proc.poll() is None, (tmp_path / f"{command}.log").read_text()
        try:
            return httpx.get(url + "/health/live", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(live, f"aifabric {command} serving")
    return proc, url


def metrics(url: str) -> str:
    response = httpx.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def value(text: str, family: str, *labels: str) -> float:
    return samples(text, family)[labels]


@pytest.mark.parametrize("command", ["serve", "up"])
def test_process_figures_and_a_settled_heap(command: str, backend: FakeBackend, tmp_path: Path) -> None:
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(FABRIC.format(url=backend.url, role="chat-fast"))
    proc, url = start(command, fabric, tmp_path)
    try:
        before = metrics(url)
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(200):
                answer = client.post(
                    "/v1/chat/completions",
                    json={"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert answer.status_code == 200
        after = metrics(url)

        assert value(after, "process_cpu_seconds_total") > value(before, "process_cpu_seconds_total")
        assert 10e6 < value(after, "process_resident_memory_bytes") < 2e9
        assert value(after, "process_open_fds") > 3  # the listener, the upstream connection, the log
        assert (
            abs(value(after, "process_start_time_seconds") - value(before, "process_start_time_seconds")) < 1
        )
        for generation in ("0", "1", "2"):
            assert value(after, "python_gc_collections_total", generation) >= 0
            assert value(after, "python_gc_objects_collected_total", generation) >= 0
        # Startup's objects (modules, the config, the routing table: tens of thousands) moved out of the
        # collector's sight, under `up` as under `serve`.
        assert value(after, "aifabric_gc_frozen_objects") > 10_000

        # A reload replaces the config and the table: the heap is unfrozen, collected whole (the old
        # table's cycles freed) and frozen again, on SIGHUP under both commands.
        full = value(after, "python_gc_collections_total", "2")
        fabric.write_text(FABRIC.format(url=backend.url, role="chat-deep"))
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]} == {"chat-deep"},
            "the reloaded roles served",
        )
        reloaded = metrics(url)
        assert value(reloaded, "python_gc_collections_total", "2") > full
        assert value(reloaded, "aifabric_gc_frozen_objects") > 10_000

        checked = shutil.which("promtool")
        assert checked, "promtool is not installed (make system-deps installs Debian's prometheus package)"
        lint = subprocess.run(
            [checked, "check", "metrics"], check=False, input=after, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=15)
