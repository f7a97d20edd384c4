"""`aifabric drill --backend NAME --config FILE` on a remote backend: its drill commands fail and restore
it, against a real probing gateway (as `aifabric serve` runs it) on fake backends."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config
from aifabric.ops.drill_remote import run_command
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.processes import alive
from aifabric.testing.wait import eventually, wait_until

Start = Callable[..., RunningGateway]

# The "remote machine" is a fake vLLM driven over its HTTP control route, as `ssh host podman stop`
# would drive the real one: fail makes every route answer 500, restore undoes it.
SWITCH = """\
import json, sys, urllib.request
body = json.dumps(json.loads(sys.argv[2])).encode()
req = urllib.request.Request(sys.argv[1] + "/_fake/config", body, {"content-type": "application/json"})
urllib.request.urlopen(req, timeout=10).read()
"""


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


def fabric(tmp_path: Path, gpu: FakeBackend, cloud: FakeBackend, fail: str, restore: str) -> Path:
    path = tmp_path / "fabric.yaml"
    probe = "health: {interval: 0.2s, unhealthy_threshold: 1}"
    path.write_text(
        f"""\
backends:
  gpu:
    kind: vllm
    url: "{gpu.url}"
    {probe}
    drill: {{fail: '{fail}', restore: '{restore}'}}
  cloud: {{kind: openai, url: "{cloud.url}", {probe}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: gpu, model: qwen}}], fallbacks: [openai/strong]}}
  openai/strong: {{kind: chat, targets: [{{backend: cloud, model: gpt-4o}}]}}
"""
    )
    return path


def started(path: Path) -> RunningGateway:
    """A gateway on `path`, once every backend of it has been probed up: the drill's baseline wants that,
    and asking before the first probe finds them "unknown" (a race the test must not run)."""
    config = load_config(path)
    gw = RunningGateway(config, probe=True).start()
    for name in config.backends:
        wait_until(lambda name=name: gw.state(name) == "up", f"{name} to be probed up")
    return gw


def switch(tmp_path: Path, fb: FakeBackend, changes: dict[str, Any]) -> str:
    script = tmp_path / "switch.py"
    script.write_text(SWITCH)
    return f"{sys.executable} {script} {fb.base_url} {json.dumps(json.dumps(changes))}"


def test_the_drill_fails_detects_serves_through_fallbacks_restores_and_recovers(tmp_path: Path) -> None:
    with (
        FakeBackend(kind="vllm", models=("qwen",)) as gpu,
        FakeBackend(kind="openai", models=("gpt-4o",)) as cloud,
    ):
        fail = switch(tmp_path, gpu, {"status_override": 500, "fault_scope": "all"})
        restore = switch(tmp_path, gpu, {"status_override": None, "fault_scope": "inference"})
        path = fabric(tmp_path, gpu, cloud, fail, restore)
        gw = started(path)
        try:
            code, text = run_cli(
                "drill",
                "--backend",
                "gpu",
                "--config",
                str(path),
                "--url",
                gw.url,
                "--timeout",
                "30",
                "--json",
            )
        finally:
            gw.stop()
    report = json.loads(text)
    assert code == 0, text
    steps = [(s["name"], s["ok"]) for s in report["steps"]]
    assert steps == [
        ("baseline", True),
        ("fail gpu", True),
        ("detection", True),
        ("service while down", True),
        ("restore gpu", True),
        ("recovery", True),
    ]
    assert report["answered"]["chat-fast"] == "via openai/strong/cloud"
    assert gpu.switches.status_override is None  # restored


def test_a_failing_fail_command_still_restores_and_the_drill_fails(tmp_path: Path) -> None:
    marker = tmp_path / "restored"
    with (
        FakeBackend(kind="vllm", models=("qwen",)) as gpu,
        FakeBackend(kind="openai", models=("gpt-4o",)) as cloud,
    ):
        path = fabric(tmp_path, gpu, cloud, "echo no route to host; exit 255", f"touch {marker}")
        gw = started(path)
        try:
            code, text = run_cli(
                "drill", "--backend", "gpu", "--config", str(path), "--url", gw.url, "--timeout", "30"
            )
        finally:
            gw.stop()
    assert code == 1, text
    assert "backends.gpu.drill's fail command exited with 255: no route to host" in text
    assert marker.exists()  # always restored
    assert "PASS  restore gpu" in text


def test_a_backend_without_drill_commands_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "fabric.yaml"
    path.write_text(
        'backends:\n  gpu: {kind: vllm, url: "http://127.0.0.1:9/v1"}\n'
        "roles:\n  chat-fast: {kind: chat, targets: [{backend: gpu, model: m}]}\n"
    )
    code, text = run_cli("drill", "--backend", "gpu", "--config", str(path), "--url", "http://127.0.0.1:9")
    assert code == 2
    assert "backend 'gpu' has no drill: section" in text


def test_a_command_cut_off_by_ctrl_c_is_killed_with_what_it_started(tmp_path: Path) -> None:
    # A `fail` command still running when the operator hits Ctrl-C (a slow `ssh host podman stop`) must
    # not finish behind the drill's back, after its restore: it is killed, and whatever it started.
    pidfile, late = tmp_path / "pid", tmp_path / "late"

    async def scenario() -> None:
        task = asyncio.create_task(run_command(f"sleep 30 & echo $! > {pidfile}; wait; touch {late}"))
        await eventually(lambda: pidfile.exists() and pidfile.read_text().strip() != "", "the command")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    wait_until(lambda: not alive(int(pidfile.read_text())), "the command's own child killed")
    assert not late.exists()
