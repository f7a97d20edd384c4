"""The record of a running `aifabric up` (cli.running): commands with `--url` default to its URL while
its process lives; $AIFABRIC_URL and `--url` still win; a dead or garbled record is ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aifabric.cli.running import forget_running, record_running, running_url
from aifabric.testing.net import free_port
from cli_process import aifabric


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("AIFABRIC_URL", raising=False)
    return tmp_path / "aifabric" / "up.json"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has it (until the kernel reuses it, far later)


def test_a_live_record_is_read_and_only_its_own_process_forgets_it(state: Path) -> None:
    assert running_url() is None
    record_running("http://127.0.0.1:8123")
    record = json.loads(state.read_text())
    assert record["url"] == "http://127.0.0.1:8123" and record["pid"] == os.getpid()
    assert isinstance(record["started"], int)
    assert running_url() == "http://127.0.0.1:8123"
    forget_running(pid=os.getpid() + 1)  # another `up`: not its record
    assert running_url() == "http://127.0.0.1:8123"
    forget_running()
    assert not state.exists() and running_url() is None


def test_the_record_of_a_process_that_is_gone_is_ignored(state: Path) -> None:
    record_running("http://127.0.0.1:8123", pid=dead_pid())
    assert running_url() is None


def test_a_record_whose_pid_now_belongs_to_another_process_is_ignored(state: Path) -> None:
    record_running("http://127.0.0.1:8123")
    record = json.loads(state.read_text())
    state.write_text(json.dumps({**record, "started": record["started"] - 1}))  # the pid, reused
    assert running_url() is None


@pytest.mark.parametrize("text", ["", "{", "[]", '{"url": 5, "pid": 1}', '{"url": "x", "pid": true}'])
def test_a_garbled_record_is_ignored(state: Path, text: str) -> None:
    state.parent.mkdir(parents=True)
    state.write_text(text)
    assert running_url() is None


def status(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return aifabric("status", "--timeout", "2", *argv, env=env)


def test_status_asks_the_running_up_then_aifabric_url_then_url(state: Path, tmp_path: Path) -> None:
    recorded, from_env, given = free_port(), free_port(), free_port()  # nothing listens on any
    record_running(f"http://127.0.0.1:{recorded}")  # this test's own process: alive
    env = {"XDG_STATE_HOME": str(tmp_path)}
    plain = status(env)
    assert plain.returncode == 3 and f"127.0.0.1:{recorded}" in plain.stdout + plain.stderr
    with_env = status({**env, "AIFABRIC_URL": f"http://127.0.0.1:{from_env}"})
    assert f"127.0.0.1:{from_env}" in with_env.stdout + with_env.stderr
    explicit = status(
        {**env, "AIFABRIC_URL": f"http://127.0.0.1:{from_env}"}, "--url", f"http://127.0.0.1:{given}"
    )
    assert f"127.0.0.1:{given}" in explicit.stdout + explicit.stderr
