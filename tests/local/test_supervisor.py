"""The supervisor on real processes: readiness, progress, crash restarts, port conflicts, clean stops."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import replace
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


def make(
    tmp_path: Path, *specs_args: tuple[str, tuple[str, ...]], grace: float = 5.0
) -> tuple[Supervisor, io.StringIO, list[int]]:
    out = io.StringIO()
    ports = [free_port() for _ in specs_args]
    specs = [fake_spec(name, port, *args) for (name, args), port in zip(specs_args, ports, strict=True)]
    return Supervisor(specs, log_dir=tmp_path / "logs", out=out, policy=FAST, grace=grace), out, ports


def test_starts_every_backend_waits_until_ready_and_says_so(tmp_path: Path) -> None:
    sup, out, ports = make(tmp_path, ("chat", ("--load-seconds", "0.5")), ("embed", ()))
    sup.start()
    try:
        assert sup.wait_ready(timeout=60)
        assert sup.states() == {"chat": "ready", "embed": "ready"}
        text = out.getvalue()
        for name, port in (("chat", ports[0]), ("embed", ports[1])):
            pid = sup.pids()[name]
            assert re.search(rf"{name}\s+loading: pid {pid}, port {port}\n", text)
            assert re.search(rf"{name}\s+ready in \d+\.\d s \(pid {pid}, port {port}\)", text)
        assert (tmp_path / "logs" / "chat.log").read_text().count("fake backend pid") == 1
    finally:
        sup.stop()


def test_stop_terminates_every_process_group_and_frees_the_ports(tmp_path: Path) -> None:
    sup, _, ports = make(tmp_path, ("a", ("--fork-child",)), ("b", ()))
    sup.start()
    assert sup.wait_ready(timeout=60)
    pids = list(sup.pids().values())
    grandchildren = [c for pid in pids for c in children_of(pid)]
    assert grandchildren, "the fake backend forks a child that ignores SIGTERM"
    sup.stop()
    for pid in pids + grandchildren:
        assert not alive(pid), f"pid {pid} survived stop()"
    for port in ports:
        assert not port_in_use("127.0.0.1", port)
    assert set(sup.states().values()) == {"stopped"}


def test_a_backend_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    sup, out, _ = make(tmp_path, ("stubborn", ("--ignore-term",)), grace=0.5)
    sup.start()
    assert sup.wait_ready(timeout=60)
    pid = sup.pids()["stubborn"]
    sup.stop()
    assert not alive(pid)
    assert "stubborn: still running 0.5 s after SIGTERM; killing it" in out.getvalue()


def test_a_crashed_backend_is_restarted_with_backoff_and_the_operator_is_told(tmp_path: Path) -> None:
    sup, out, ports = make(tmp_path, ("chat", ()))
    sup.start()
    try:
        assert sup.wait_ready(timeout=60)
        first = sup.pids()["chat"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: "restarted, ready" in out.getvalue(), what="the restart")
        text = out.getvalue()
        assert "chat: chat was killed by signal 9; restarting in 0 s (restart 1, log: " in text
        second = sup.pids()["chat"]
        assert second != first and alive(second)
        assert sup.states()["chat"] == "ready"
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=5):
            pass
    finally:
        sup.stop()


def test_a_backend_that_never_loads_is_given_up_on_with_its_log(tmp_path: Path) -> None:
    sup, out, _ = make(tmp_path, ("broken", ("--exit-code", "3")))
    sup.start()
    try:
        with pytest.raises(LocalBackendError) as err:
            sup.wait_ready(timeout=60)
        message = str(err.value)
        assert "broken did not start (3 tries): broken exited with code 3" in message
        assert "cannot load the model: exiting with 3" in message  # the tail of its log
        assert out.getvalue().count("restarting in") == 2
        assert "giving up" in out.getvalue()
    finally:
        sup.stop()


def test_a_port_already_in_use_is_reported_with_its_holder_before_anything_starts(tmp_path: Path) -> None:
    sup, _, ports = make(tmp_path, ("chat", ()), ("embed", ()))
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", ports[1]))
        holder.listen()
        with pytest.raises(LocalBackendError) as err:
            sup.check_ports()
    message = str(err.value)
    assert f"port {ports[1]} on 127.0.0.1 is already in use by pid {os.getpid()} (" in message
    assert str(ports[0]) not in message
    assert sup.pids() == {}


def test_wait_ready_returns_false_when_asked_to_stop(tmp_path: Path) -> None:
    sup, _, _ = make(tmp_path, ("slow", ("--load-seconds", "30")))
    stop = threading.Event()
    sup.start()
    try:
        threading.Timer(0.3, stop.set).start()
        assert sup.wait_ready(stop, timeout=60) is False
    finally:
        sup.stop()
    assert sup.states() == {"slow": "stopped"}


def test_not_ready_in_time_names_the_backend_and_the_logs(tmp_path: Path) -> None:
    sup, _, _ = make(tmp_path, ("slow", ("--load-seconds", "30")))
    sup.start()
    try:
        with pytest.raises(LocalBackendError, match=r"not ready after 0 s: slow; see the logs in .*logs"):
            sup.wait_ready(timeout=0.2)
    finally:
        sup.stop()


def test_the_environment_is_scrubbed_of_what_the_spec_unsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # llama-cpp-python's server takes PORT and HOST from the environment over --port and --host.
    monkeypatch.setenv("PORT", "8000")
    monkeypatch.setenv("host", "0.0.0.0")
    monkeypatch.setenv("KEEP_ME", "yes")
    # llama-server reads every flag from LLAMA_ARG_<FLAG>: a whole family of names is dropped.
    monkeypatch.setenv("LLAMA_ARG_HOST", "0.0.0.0")
    port = free_port()
    spec = fake_spec(
        "env", port, *("--print-env", "PORT", "--print-env", "host", "--print-env", "LLAMA_ARG_HOST"),
        *("--print-env", "KEEP_ME"),
    )  # fmt: skip
    spec = replace(spec, unset_env=frozenset({"PORT", "HOST"}), unset_env_prefixes=("LLAMA_ARG_",))
    sup = Supervisor([spec], log_dir=tmp_path / "logs", out=io.StringIO(), policy=FAST)
    sup.start()
    try:
        assert sup.wait_ready(timeout=60)
    finally:
        sup.stop()
    log = (tmp_path / "logs" / "env.log").read_text()
    assert "env PORT=<unset>\nenv host=<unset>\nenv LLAMA_ARG_HOST=<unset>\nenv KEEP_ME=yes\n" in log


def test_two_backends_given_the_same_port_are_refused_before_starting(tmp_path: Path) -> None:
    port = free_port()
    specs = [fake_spec("one", port), fake_spec("two", port)]
    sup = Supervisor(specs, log_dir=tmp_path / "logs", out=io.StringIO(), policy=FAST)
    with pytest.raises(
        LocalBackendError, match=rf"local backends 'one' and 'two' are both given port {port}"
    ):
        sup.check_ports()


_SUPERVISE = """
import sys, io, time
from pathlib import Path
from local_support import fake_spec
from aifabric.local.supervisor import Supervisor
spec = fake_spec("stubborn", int(sys.argv[1]), "--ignore-term")
sup = Supervisor([spec], log_dir=Path(sys.argv[2]), out=io.StringIO())
sup.start()
assert sup.wait_ready(timeout=60)
print(sup.pids()["stubborn"], flush=True)
time.sleep(600)
"""


def test_a_sigkilled_supervisor_takes_even_a_backend_that_ignores_sigterm_with_it(tmp_path: Path) -> None:
    """The kernel's parent-death signal is the only one a backend gets when its supervisor is SIGKILLed:
    it must be one the backend cannot catch (llama-server once stayed in its SIGTERM cleanup > 30 s)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    backend = 0
    with subprocess.Popen(
        [sys.executable, "-c", _SUPERVISE, str(free_port()), str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            backend = int(parent.stdout.readline())
            assert alive(backend)
            parent.kill()
            parent.wait()
            wait_until(lambda: not alive(backend), timeout=10, what="the backend to die with its supervisor")
        finally:
            parent.kill()
            if backend and alive(backend):
                os.kill(backend, signal.SIGKILL)
