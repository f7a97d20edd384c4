"""`aifabric up` reloads its fabric file on SIGHUP, except a change to the backends it launched."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from aifabric.cli.console import Console
from aifabric.cli.up import _reload, _reloader
from aifabric.config.load import load_config
from aifabric.gateway.reload import ReloadOutcome
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port

REMOTE = """
gateway: {{host: 127.0.0.1, port: {port}}}
backends:
  b1: {{kind: vllm, url: "{url}"}}
roles:
  {role}: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
"""

LOCAL = """
backends:
  emb: {{kind: aifabric-embed, local: {{engine: aifabric-embed, model: all-minilm-l6-v2-int8, port: {port}}}}}
roles:
  embeddings-general: {{kind: embeddings, targets: [{{backend: emb, model: all-minilm-l6-v2-int8}}]}}
"""


def ids(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}


def test_sighup_reloads_roles_of_a_running_up(tmp_path: Path) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as fb:
        port = free_port()
        path = tmp_path / "fabric.yaml"
        path.write_text(REMOTE.format(port=port, url=fb.url, role="chat-fast"))
        exe = Path(sys.executable).with_name("aifabric")
        proc = subprocess.Popen(
            [str(exe), "up", "--config", str(path), "--log-dir", str(tmp_path / "logs")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(url + "/health/live").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            assert ids(url) == {"chat-fast"}
            path.write_text(REMOTE.format(port=port, url=fb.url, role="chat-deep"))
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                if ids(url) == {"chat-deep"}:
                    break
                time.sleep(0.05)
            assert ids(url) == {"chat-deep"}
            # The same reload asked over HTTP (`aifabric config reload`), with the diff it applied.
            path.write_text(REMOTE.format(port=port, url=fb.url, role="chat-code"))
            done = subprocess.run(
                [str(exe), "config", "reload", "--url", url],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert "+ roles.chat-code" in done.stdout and "- roles.chat-deep" in done.stdout
            assert ids(url) == {"chat-code"}
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "reloaded" in out


def test_reload_refuses_a_change_to_local_backends(tmp_path: Path) -> None:
    path = tmp_path / "fabric.yaml"
    path.write_text(LOCAL.format(port=18901))
    running = load_config(path)

    class Recorded:
        """What the gateway's `Reloads.record` is told (shared with `config reload` through the state)."""

        outcomes: list[ReloadOutcome] = []

        def record(self, outcome: ReloadOutcome) -> None:
            self.outcomes.append(outcome)

    class FakeGateway:
        reloaded: list[object] = []
        config = running  # what a reload diffs against
        reloads = Recorded()

        def reload(self, config: object) -> None:
            self.reloaded.append(config)

        reloader: Callable[[], ReloadOutcome] | None = None

    gateway = FakeGateway()
    # As `up` wires it once serving (less the heap's settling, which is for the gateway's own process).
    gateway.reloader = lambda: _reloader(running, gateway, None)  # type: ignore[arg-type]
    out, err = io.StringIO(), io.StringIO()
    path.write_text(LOCAL.format(port=18902))  # the launched backend's port changed
    _reload([gateway], Console(out, err))  # type: ignore[list-item]
    assert gateway.reloaded == []
    assert "local backends changed" in err.getvalue() and "restart" in err.getvalue()
    assert [o.applied for o in gateway.reloads.outcomes] == [False]
    path.write_text(LOCAL.format(port=18901) + "aliases: {local/embed: embeddings-general}\n")
    _reload([gateway], Console(out, err))  # type: ignore[list-item]
    assert len(gateway.reloaded) == 1
    assert [o.applied for o in gateway.reloads.outcomes] == [False, True]
