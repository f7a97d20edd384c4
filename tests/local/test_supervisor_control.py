"""Stopping and starting one local backend on request (what `aifabric drill` and the admin routes use)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from local_support import children_of, fake_spec, wait_until

from aifabric.errors import LocalBackendError
from aifabric.local.ports import port_in_use
from aifabric.local.restart import RestartPolicy
from aifabric.local.supervisor import Supervisor
from aifabric.testing.net import free_port
from aifabric.testing.processes import alive

FAST = RestartPolicy(base=0.1, max_delay=0.5, max_start_failures=3)


class Recorder:
    """An on_state listener, as the gateway is one: every (name, state, why) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, name: str, state: str, why: str) -> None:
        with self._lock:
            self.events.append((name, state, why))

    def states_of(self, name: str) -> list[str]:
        with self._lock:
            return [state for n, state, _ in self.events if n == name]


def started(tmp_path: Path, *args: str, grace: float = 5.0) -> tuple[Supervisor, io.StringIO, int, Recorder]:
    out, port, recorder = io.StringIO(), free_port(), Recorder()
    other = fake_spec("other", free_port())
    sup = Supervisor(
        [fake_spec("chat", port, *args), other], log_dir=tmp_path / "logs", out=out, policy=FAST, grace=grace
    )
    sup.on_state = recorder
    sup.start()
    assert sup.wait_ready(timeout=60)
    return sup, out, port, recorder


def test_a_stopped_backend_stays_stopped_until_started_again(tmp_path: Path) -> None:
    sup, out, port, recorder = started(tmp_path, "--fork-child")
    try:
        first = sup.pids()["chat"]
        grandchildren = children_of(first)
        assert grandchildren, "the fake backend forks a child that ignores SIGTERM"
        sup.stop_backend("chat")
        wait_until(lambda: "chat" not in sup.pids(), what="the stopped process to be reaped")
        assert sup.states() == {"chat": "stopped", "other": "ready"}
        for pid in [first, *grandchildren]:
            assert not alive(pid), f"pid {pid} outlived stop_backend"
        assert not port_in_use("127.0.0.1", port)
        assert ("chat", "stopped", "stopped by a drill/operator") in recorder.events
        assert f"chat: stopped on request (SIGTERM to pid {first})" in out.getvalue()
        # Not restarted by itself, unlike a crash: a few monitor ticks later it is still down.
        threading.Event().wait(1.0)
        assert sup.states()["chat"] == "stopped" and "chat" not in sup.pids()

        sup.start_backend("chat")
        wait_until(lambda: sup.states()["chat"] == "ready", what="the backend to be ready again")
        second = sup.pids()["chat"]
        assert second != first and alive(second)
        assert port_in_use("127.0.0.1", port)
        assert recorder.states_of("chat")[-3:] == ["stopped", "loading", "ready"]
        assert "chat: starting again on request" in out.getvalue()
        assert "chat: restarted, ready in" in out.getvalue()
    finally:
        sup.stop()


def test_start_right_after_stop_waits_for_the_old_process_then_starts(tmp_path: Path) -> None:
    sup, _, _, recorder = started(tmp_path)
    try:
        first = sup.pids()["chat"]
        sup.stop_backend("chat")
        sup.start_backend("chat")  # before the monitor has even seen the stop
        wait_until(
            lambda: sup.states()["chat"] == "ready" and sup.pids().get("chat") not in (None, first),
            what="a new process, ready",
        )
        assert not alive(first)
        assert recorder.states_of("chat")[-3:] == ["stopped", "loading", "ready"]
    finally:
        sup.stop()


def test_a_stopped_backend_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    sup, out, _, _ = started(tmp_path, "--ignore-term", grace=0.5)
    try:
        pid = sup.pids()["chat"]
        sup.stop_backend("chat")
        wait_until(lambda: not alive(pid), what="SIGKILL after the grace period")
        assert "chat: still running 0.5 s after SIGTERM; killing it" in out.getvalue()
        assert sup.states()["chat"] == "stopped"
    finally:
        sup.stop()


def test_starting_a_running_backend_changes_nothing(tmp_path: Path) -> None:
    sup, _, _, recorder = started(tmp_path)
    try:
        pid = sup.pids()["chat"]
        before = list(recorder.events)
        sup.start_backend("chat")
        threading.Event().wait(0.6)  # a few monitor ticks: the request has been carried out
        assert sup.pids()["chat"] == pid and sup.states()["chat"] == "ready"
        assert recorder.events == before
    finally:
        sup.stop()


def test_unknown_names_and_a_supervisor_that_is_not_running_are_refused(tmp_path: Path) -> None:
    sup = Supervisor([fake_spec("chat", free_port())], log_dir=tmp_path / "logs", out=io.StringIO())
    with pytest.raises(LocalBackendError, match="not running"):
        sup.stop_backend("chat")
    with pytest.raises(LocalBackendError, match="'nope' is not a local backend of this fabric"):
        sup.start_backend("nope")
    assert sup.names() == ["chat"]


def test_stop_of_the_supervisor_also_ends_a_backend_that_was_stopping(tmp_path: Path) -> None:
    sup, _, _, _ = started(tmp_path, "--ignore-term", grace=0.5)
    pid = sup.pids()["chat"]
    sup.stop_backend("chat")
    sup.stop()
    assert not alive(pid)
    assert set(sup.states().values()) == {"stopped"}
