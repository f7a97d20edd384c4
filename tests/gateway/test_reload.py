"""SIGHUP reloads the fabric file of a running `aifabric serve`; a broken file changes nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

FABRIC = """
gateway: {{host: 127.0.0.1, port: {port}}}
backends:
  b1: {{kind: vllm, url: "{url}"}}
roles:
  {role}: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
"""


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert proc.poll() is None, "the gateway exited"
        try:
            if httpx.get(url + "/health/live").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("gateway not ready")


def model_ids(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}


def test_sighup_reloads_and_a_broken_file_keeps_the_old_table(tmp_path: Path) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as fb:
        port = free_port()
        path = tmp_path / "fabric.yaml"
        path.write_text(FABRIC.format(port=port, url=fb.url, role="chat-fast"))
        exe = Path(sys.executable).with_name("aifabric")
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen([str(exe), "serve", "--config", str(path)], stderr=log_file)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            assert model_ids(url) == {"chat-fast"}
            path.write_text(FABRIC.format(port=port, url=fb.url, role="chat-deep"))
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: model_ids(url) == {"chat-deep"}, "the reloaded roles served")
            path.write_text("roles: [this is: not valid")
            proc.send_signal(signal.SIGHUP)
            # The refusal is logged once the reload was processed: only then does the old table count.
            wait_until(lambda: "refused" in log_path.read_text(), "the broken reload refused")
            assert model_ids(url) == {"chat-deep"}
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        assert proc.returncode == 0
        log = log_path.read_text()
        assert "reload of" in log and "refused" in log and "fabric.yaml" in log
