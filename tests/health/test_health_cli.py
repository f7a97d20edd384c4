"""`aifabric health` on a fabric file of fake servers on 127.0.0.1: table, JSON, exit codes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.testing.fake_backend import FakeBackend
from cli_process import aifabric


@dataclass
class Estate:
    file: Path
    embed: FakeBackend
    fast: FakeBackend
    deep: FakeBackend


FABRIC = """\
hosts:
  motoko:     {{address: 127.0.0.1, always_on: true}}
  armitage:   {{address: 127.0.0.1, always_on: true}}
  wintermute: {{address: 127.0.0.1, always_on: false}}
backends:
  motoko-embed:    {{host: motoko,     kind: vllm, url: "{embed}"}}
  armitage-vllm:   {{host: armitage,   kind: vllm, url: "{fast}", api_key: "sk-test-secret"}}
  wintermute-vllm: {{host: wintermute, kind: llamacpp, url: "{deep}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: armitage-vllm, model: Qwen2.5-7B-Instruct-AWQ}}]
  chat-deep:
    kind: chat
    targets: [{{backend: wintermute-vllm, model: Llama-3-8B-Instruct-AWQ}}]
  embeddings-general:
    kind: embeddings
    targets: [{{backend: motoko-embed, model: bge-base-en-v1.5}}]
"""


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Estate]:
    with (
        FakeBackend(kind="vllm", models=("bge-base-en-v1.5",)) as embed,
        FakeBackend(kind="vllm", models=("Qwen2.5-7B-Instruct-AWQ",), api_key="sk-test-secret") as fast,
        FakeBackend(kind="llamacpp", models=("Llama-3-8B-Instruct-AWQ",)) as deep,
    ):
        path = tmp_path / "fabric.yaml"
        path.write_text(FABRIC.format(embed=embed.url, fast=fast.url, deep=deep.url))
        yield Estate(path, embed, fast, deep)


def health(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["health", *args], Console(out, err))
    return code, out.getvalue(), err.getvalue()


def test_all_up_exits_0_with_a_row_per_backend(fabric: Estate) -> None:
    code, out, _ = health("--config", str(fabric.file))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["BACKEND", "HOST", "KIND", "STATE", "LATENCY", "MODELS", "SERVED", "LOAD"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line and not line.startswith(" ")}
    assert rows["motoko-embed"][1:4] == ["motoko", "vllm", "up"]
    assert rows["wintermute-vllm"][1:4] == ["wintermute", "llamacpp", "up"]
    assert "bge-base-en-v1.5 ok" in out
    assert "requests_waiting=0" in out
    assert lines[-1] == "3 up: ok (exit 0)"
    assert "sk-test-secret" not in out


def test_a_sleeping_workstation_exits_1_and_says_it_is_expected(fabric: Estate) -> None:
    fabric.deep.stop()
    code, out, _ = health("--config", str(fabric.file))
    assert code == 1, out
    assert "asleep" in out
    assert "always_on: false" in out
    assert out.splitlines()[-1] == "1 asleep, 2 up: attention (exit 1)"


def test_a_saturated_backend_exits_1_and_says_why(fabric: Estate) -> None:
    fabric.fast.set(num_requests_waiting=20)
    code, out, _ = health("--config", str(fabric.file))
    assert code == 1, out
    assert "why: saturated: 20 requests waiting" in out


def test_a_down_backend_exits_2(fabric: Estate) -> None:
    fabric.embed.stop()
    code, out, _ = health("--config", str(fabric.file))
    assert code == 2, out
    assert f"why: not answering at http://127.0.0.1:{fabric.embed.port}" in out


def test_a_model_id_mismatch_exits_2_with_the_fix(fabric: Estate, caplog: pytest.LogCaptureFixture) -> None:
    fabric.embed.set(models=("BAAI/bge-base-en-v1.5",))
    with caplog.at_level(logging.DEBUG):
        code, out, err = health("--config", str(fabric.file))
    assert code == 2, out
    assert "MISMATCH: config says bge-base-en-v1.5, motoko-embed serves BAAI/bge-base-en-v1.5" in out
    assert out.splitlines()[-1] == "1 mismatched, 3 up: broken (exit 2)"
    assert err == ""
    assert not [r for r in caplog.records if "drift" in r.getMessage()], "said once, in the report"


def test_json_for_machines(fabric: Estate) -> None:
    fabric.embed.set(models=("BAAI/bge-base-en-v1.5",))
    fabric.deep.stop()
    code, out, _ = health("--config", str(fabric.file), "--json")
    assert code == 2
    view = json.loads(out)
    assert view["exit_code"] == 2 and view["status"] == "broken"
    embed = view["backends"]["motoko-embed"]
    assert embed["state"] == "up"
    assert embed["models"] == [{"configured": "bge-base-en-v1.5", "served": False}]
    assert embed["served_models"] == ["BAAI/bge-base-en-v1.5"]
    assert embed["mismatches"][0].startswith("config says bge-base-en-v1.5")
    deep = view["backends"]["wintermute-vllm"]
    assert (deep["state"], deep["status"], deep["always_on"]) == ("asleep", "attention", False)
    assert deep["failure"] == "connect"
    assert view["backends"]["armitage-vllm"]["load"]["kv_cache_usage"] == 0.0
    assert "sk-test-secret" not in out


def test_one_backend_only(fabric: Estate) -> None:
    fabric.embed.stop()
    code, out, _ = health("armitage-vllm", "--config", str(fabric.file), "--json")
    assert code == 0
    assert list(json.loads(out)["backends"]) == ["armitage-vllm"]
    assert fabric.embed.count() == 0


def test_unknown_backend_names_the_known_ones(fabric: Estate) -> None:
    code, _, err = health("motoko", "--config", str(fabric.file))
    assert code == 2
    assert "no backend named 'motoko'" in err
    assert "motoko-embed" in err


def test_the_installed_command_exits_with_the_status(fabric: Estate) -> None:
    fabric.deep.stop()
    proc = aifabric("health", "--config", str(fabric.file))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "asleep" in proc.stdout
