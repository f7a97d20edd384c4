"""`aifabric drill --backend NAME --config FILE` as an operator runs it: a process of its own, against an
`aifabric serve` process, on a "remote" backend that is a process too, failed and restored by the
backend's `drill: {fail, restore}` commands (as `ssh host podman stop/start vllm` would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port
from aifabric.testing.processes import alive
from aifabric.testing.wait import wait_until
from serve_process import Serve

# The remote machine's service manager, for the fake vLLM: `start` launches it in the background (the
# command returns at once, as `podman start` does) and `stop` kills it and waits until it is gone.
# Each run appends to `events`, so a test sees what the drill ran.
CONTROL = """\
import os, signal, subprocess, sys, time
from pathlib import Path
from aifabric.testing.processes import alive
here, port = Path(sys.argv[2]), sys.argv[3]
pidfile = here / "backend.pid"
if sys.argv[1] == "start":
    log = open(here / "backend.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifabric.testing.fake_backend", "--port", port, "--kind", "vllm",
         "--model", "qwen"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
else:
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.02)
with open(here / "events", "a") as events:
    events.write(sys.argv[1] + "\\n")
"""


@dataclass
class Remote:
    """The "remote" vLLM's machine: its control script, pid file and event log."""

    here: Path
    port: int

    def command(self, action: str) -> str:
        return f"{sys.executable} {self.here / 'control.py'} {action} {self.here} {self.port}"

    def run(self, action: str) -> None:
        subprocess.run(self.command(action), shell=True, check=True, timeout=30)

    @property
    def pid(self) -> int:
        return int((self.here / "backend.pid").read_text())

    @property
    def events(self) -> list[str]:
        path = self.here / "events"
        return path.read_text().split() if path.exists() else []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    (tmp_path / "control.py").write_text(CONTROL)
    machine = Remote(tmp_path, free_port())
    machine.run("start")
    try:
        yield machine
    finally:
        if alive(machine.pid):
            os.kill(machine.pid, signal.SIGKILL)


@pytest.fixture
def cloud() -> Iterator[FakeBackend]:
    with FakeBackend(kind="openai", models=("gpt-4o",)) as backend:
        yield backend


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Serve]]:
    """Starts `aifabric serve` on a fabric file and waits until it has probed gpu and cloud up."""
    started: list[Serve] = []

    def start(path: Path) -> Serve:
        gateway = Serve(path, "--host", "127.0.0.1")
        started.append(gateway)
        return gateway.wait_up("gpu", "cloud")

    yield start
    for gateway in started:
        gateway.stop()


def fabric(remote: Remote, cloud: FakeBackend, gpu_interval: str) -> Path:
    path = remote.here / "fabric.yaml"
    path.write_text(
        f"""\
backends:
  gpu:
    kind: vllm
    url: "{remote.url}"
    health: {{interval: {gpu_interval}, unhealthy_threshold: 1}}
    drill: {{fail: "{remote.command("stop")}", restore: "{remote.command("start")}"}}
  cloud: {{kind: openai, url: "{cloud.url}", health: {{interval: 0.2s}}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: gpu, model: qwen}}], fallbacks: [openai/strong]}}
  openai/strong: {{kind: chat, targets: [{{backend: cloud, model: gpt-4o}}]}}
"""
    )
    return path


def answers(remote: Remote) -> bool:
    try:
        return httpx.get(remote.url + "/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def drill(path: Path, gateway: Serve, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "aifabric", "drill", "--backend", "gpu", "--config", str(path),
            "--url", gateway.url, "--timeout", "60", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each step's line as it happens
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_the_drill_command_runs_against_an_aifabric_serve_process(
    remote: Remote, cloud: FakeBackend, serve: Callable[[Path], Serve]
) -> None:
    path = fabric(remote, cloud, gpu_interval="0.2s")
    gateway = serve(path)
    first = remote.pid

    proc = drill(path, gateway, "--json")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    report = json.loads(out)
    assert [(s["name"], s["ok"]) for s in report["steps"]] == [
        ("baseline", True),
        ("fail gpu", True),
        ("detection", True),
        ("service while down", True),
        ("restore gpu", True),
        ("recovery", True),
    ], out
    assert report["backend"] == "gpu"
    assert report["answered"]["chat-fast"] == "via openai/strong/cloud"  # served through the fallback
    assert report["exit_code"] == 0
    # The remote backend was really stopped and started again: a new process, serving, and up to the
    # gateway, which never stopped.
    assert remote.events == ["start", "stop", "start"]
    assert not alive(first) and alive(remote.pid)
    assert gateway.state("gpu") == "up" and gateway.proc.poll() is None


def test_an_interrupted_drill_still_restores_the_backend_and_fails(
    remote: Remote, cloud: FakeBackend, serve: Callable[[Path], Serve]
) -> None:
    # gpu is probed every 30 s: once the fail command has run, detection waits for the next probe,
    # which is when the operator loses patience.
    path = fabric(remote, cloud, gpu_interval="30s")
    gateway = serve(path)
    first = remote.pid

    proc = drill(path, gateway)
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        # The fail step done (the drill says so), detection under way: Ctrl-C, to the drill alone.
        wait_until(lambda: any("PASS  fail gpu" in line for line in lines), "the fail step", limit=60)
        assert remote.events == ["start", "stop"] and not alive(first)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
        proc.stdout.close()
    out = "".join(lines)
    assert proc.returncode == 130, out  # interrupted: not a pass
    assert remote.events == ["start", "stop", "start"], out  # the restore command ran, once
    assert "PASS  fail gpu" in out
    assert "PASS  restore gpu" in out and "the drill stopped early: interrupted; restoring gpu" in out
    assert "detection" not in out and "recovery" not in out  # neither was reached
    wait_until(lambda: answers(remote), "the restored backend answering")
    # The restored backend serves: a request to it through the gateway is answered by it.
    reply = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert reply.status_code == 200 and reply.headers["x-aifabric-backend"] == "gpu", reply.text
