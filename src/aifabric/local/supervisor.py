"""Run local backend processes: start, wait until ready, restart on crash, stop with no orphans.

    sup = Supervisor(specs, log_dir=Path("~/.local/state/aifabric/logs"), out=sys.stdout)
    sup.check_ports()        # every port free? else LocalBackendError naming the holder's pid
    sup.start()              # the monitor thread spawns them all
    sup.wait_ready(stop)     # progress display until every one answers its readiness probe
    ...                      # serve; a crashed backend is restarted with backoff, and we say so
    sup.stop_backend("x")    # an operator (or `aifabric drill`) stops one: "stopped", not restarted
    sup.start_backend("x")   # ... until told to start it again
    sup.stop()               # SIGTERM each process group, SIGKILL after `grace`, reap, ports free

One monitor thread does every spawn, probe and kill. That keeps the state machine single-threaded, and
it matters for PR_SET_PDEATHSIG: the kernel signals a child when the *thread* that forked it exits, so
the children are tied to this thread, which only ends after it has stopped them itself. If `up` itself
is SIGKILLed, the kernel still kills its children: no orphans even then.

Each process gets its own process group (so a signal reaches whatever it forked too) and its output goes
to `<log_dir>/<name>.log`.

`stop_backend`/`start_backend` may be called from any thread: they queue a request that the monitor
thread carries out at its next tick (a start must be forked from that thread, for PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TextIO

from aifabric.errors import LocalBackendError
from aifabric.local.launch import ProcessSpec
from aifabric.local.ports import port_in_use, port_in_use_message
from aifabric.local.progress import Progress
from aifabric.local.restart import RestartPolicy

__all__ = ["Supervisor"]

_PR_SET_PDEATHSIG = 1
_TICK = 0.2
# What listeners (the gateway's health view) are told when a backend is stopped on request.
_STOPPED_WHY = "stopped by a drill/operator"
_ON_DEMAND_WHY = "not running: started when a request needs it (start: on_demand)"


def _libc_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _libc_prctl()  # looked up before any fork: the child only calls it


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """The child dies with the thread that forked it. SIGKILL, not SIGTERM: a parent that is gone
    cannot follow a TERM with a KILL after a grace period, as `stop` does, and llama-server was seen
    to stay in "cleaning up before exit..." for more than 30 s after a TERM (while its sibling
    exited at once). A backend keeps no state that a kill would lose. `parent`: the pid that forked
    it; if it is gone already (it died between the fork and the prctl), the signal will never come."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)


@dataclass
class _Managed:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    started_at: float = 0.0
    state: str = "waiting"  # waiting, loading, ready, backoff, failed, stopped, idle (on demand)
    ever_ready: bool = False
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None
    error: str | None = None
    held: bool = False  # stopped on request: not restarted until start_backend
    resume: bool = False  # start_backend came while the stopped process was still exiting
    kill_at: float | None = None  # when a held process that ignores SIGTERM gets SIGKILL


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        log_dir: Path,
        out: TextIO,
        live: bool = False,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        grace: float = 10.0,
    ) -> None:
        self.log_dir = log_dir
        # Told of every state change (backend name, new state, why), from the supervisor's thread: the
        # gateway uses it to hold requests while a backend it routes to is being restarted.
        self.on_state: Callable[[str, str, str], None] | None = None
        self.policy = policy or RestartPolicy()
        self.grace = grace
        self._clock = clock
        self._procs = [_Managed(spec) for spec in specs]
        self._progress = Progress(out, live=live, clock=clock)
        self._lock = threading.Condition()
        self._requests: list[tuple[str, str]] = []  # (action, name), carried out by the monitor thread
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public API ---------------------------------------------------------------------------------

    def check_ports(self) -> None:
        """Fail before starting anything if a port is taken, naming every holder."""
        seen: dict[int, str] = {}
        for p in self._procs:
            if p.spec.port in seen:
                first = seen[p.spec.port]
                raise LocalBackendError(
                    f"local backends {first!r} and {p.spec.name!r} are both given port {p.spec.port}"
                )
            seen[p.spec.port] = p.spec.name
        problems = [
            port_in_use_message(p.spec.host, p.spec.port)
            for p in self._procs
            if port_in_use(p.spec.host, p.spec.port)
        ]
        if problems:
            raise LocalBackendError(
                "cannot start the local backends:\n  "
                + "\n  ".join(problems)
                + "\nstop that process, or move the local backends with `aifabric up --local-port-base N`"
            )

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for p in self._procs:
            self._progress.track(p.spec.name)
        self._thread = threading.Thread(target=self._run, name="aifabric-supervisor", daemon=True)
        self._thread.start()

    def wait_ready(self, stop: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Block until every backend is ready (True), or `stop` is set (False).

        Raises LocalBackendError when a backend gave up (crashed too often before ever being ready) or
        `timeout` passed: the message names it and points at its log.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while True:
                failed = [p for p in self._procs if p.state == "failed"]
                if failed:
                    raise LocalBackendError("\n".join(p.error or p.spec.name for p in failed))
                if all(p.state in ("ready", "idle") for p in self._procs):
                    self._progress.finish()
                    return True
                if stop is not None and stop.is_set():
                    return False
                if deadline is not None and self._clock() >= deadline:
                    slow = [p.spec.name for p in self._procs if p.state != "ready"]
                    raise LocalBackendError(
                        f"not ready after {timeout:.0f} s: {', '.join(slow)}; see the logs in {self.log_dir}"
                    )
                self._lock.wait(_TICK)

    def stop(self) -> None:
        """Stop every process (SIGTERM to its group, SIGKILL after the grace period) and reap it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._terminate_all()

    def names(self) -> list[str]:
        """The backends this supervisor runs, in the fabric file's order."""
        return [p.spec.name for p in self._procs]

    def stop_backend(self, name: str) -> None:
        """Stop one backend on purpose (a drill, an operator): SIGTERM its process group, SIGKILL after
        the grace period, and keep it "stopped" (no restart) until `start_backend`. Returns at once;
        listeners are told ("stopped") at the monitor's next tick. Raises LocalBackendError for a name
        it does not run, or when the supervisor is not running."""
        self._request("stop", name)

    def idle_backend(self, name: str, why: str) -> None:
        """Stop a model started on demand (idle, or its group's GPU wanted by another): like
        `stop_backend`, but listeners are told "idle" with `why`: not an outage, the next request that
        needs it starts it again (`start_backend`)."""
        self._request("idle:" + why, name)

    def start_backend(self, name: str) -> None:
        """Start a backend `stop_backend` stopped (readiness as at start-up, reported through on_state).
        Nothing happens for one that is already running or starting."""
        self._request("start", name)

    def states(self) -> dict[str, str]:
        with self._lock:
            return {p.spec.name: p.state for p in self._procs}

    def pids(self) -> dict[str, int]:
        with self._lock:
            return {p.spec.name: p.popen.pid for p in self._procs if p.popen is not None}

    def _request(self, action: str, name: str) -> None:
        if name not in self.names():
            raise LocalBackendError(f"{name!r} is not a local backend of this fabric")
        with self._lock:
            if self._thread is None or self._stopping.is_set():
                raise LocalBackendError("the local backends' supervisor is not running")
            self._requests.append((action, name))

    # -- the monitor thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for p in self._procs:
                if p.spec.on_demand:  # started by the first request that needs it
                    self._hold(p, "idle", _ON_DEMAND_WHY)
                else:
                    self._spawn(p)
            while not self._stopping.wait(_TICK):
                self._carry_out_requests()
                for p in self._procs:
                    self._check(p)
                self._progress.tick()
        finally:
            self._terminate_all()

    def _carry_out_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        by_name = {p.spec.name: p for p in self._procs}
        for action, name in requests:
            p = by_name[name]
            if action == "stop":
                self._hold(p)
            elif action.startswith("idle:"):
                self._hold(p, "idle", action.removeprefix("idle:"))
            elif p.held:
                p.resume = True
                if p.popen is None:  # else: started once the stopped process has exited (_check)
                    self._resume(p)

    def _hold(self, p: _Managed, state: str = "stopped", why: str = _STOPPED_WHY) -> None:
        if p.held:
            return
        pid = p.popen.pid if p.popen is not None else None
        with self._lock:
            p.held, p.resume, p.restart_at, p.state = True, False, None, state
            self._lock.notify_all()
        if p.popen is not None:
            _killpg(p.popen.pid, signal.SIGTERM)
            p.kill_at = self._clock() + self.grace
        said = "stopped on request" if state == "stopped" else why
        self._say(f"{p.spec.name}: {said}" + (f" (SIGTERM to pid {pid})" if pid else ""))
        self._notify(p.spec.name, state, why)

    def _resume(self, p: _Managed) -> None:
        with self._lock:
            p.held, p.resume, p.kill_at = False, False, None
            p.failures, p.restarts = 0, p.restarts + 1  # a fresh start: the crash budget is whole again
        self._say(f"{p.spec.name}: starting again on request")
        self._spawn(p)

    def _check_held(self, p: _Managed) -> None:
        """A stopped backend: reap its process when it exits (SIGKILL if it outstays the grace)."""
        assert p.popen is not None
        if p.popen.poll() is None:
            if p.kill_at is not None and self._clock() >= p.kill_at:
                self._say(f"{p.spec.name}: still running {self.grace:g} s after SIGTERM; killing it")
                _killpg(p.popen.pid, signal.SIGKILL)
                p.kill_at = None
            return
        self._reap_group(p)
        _wait_group_gone(p.popen.pid, self._clock, timeout=5.0)  # its port is free before any restart
        with self._lock:
            p.popen, p.kill_at = None, None
        if p.resume:
            self._resume(p)

    def _say(self, text: str) -> None:
        self._progress.message(text)

    def _spawn(self, p: _Managed) -> None:
        spec = p.spec
        if port_in_use(spec.host, spec.port):
            self._exited(p, port_in_use_message(spec.host, spec.port))
            return
        log = (self.log_dir / f"{spec.name}.log").open("ab")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} aifabric starts: {' '.join(spec.argv)}\n".encode())
        log.flush()
        try:
            popen = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(spec),
                start_new_session=True,  # its own process group: signals reach its children too
                # In the child: only a prctl (looked up before the fork) and a getppid.
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
            )
        except OSError as exc:
            log.close()
            self._exited(p, f"cannot run {spec.argv[0]}: {exc}")
            return
        with self._lock:
            p.popen, p.log, p.started_at, p.restart_at = popen, log, self._clock(), None
            p.state = "loading"
            self._lock.notify_all()
        self._progress.state(spec.name, f"loading: pid {popen.pid}, port {spec.port}", loading=True)
        self._notify(spec.name, "loading", f"starting (pid {popen.pid})")

    def _check(self, p: _Managed) -> None:
        if p.held:
            if p.popen is not None:
                self._check_held(p)
            return
        if p.popen is None:
            if p.restart_at is not None and self._clock() >= p.restart_at:
                self._spawn(p)
            return
        code = p.popen.poll()
        if code is not None:
            self._reap_group(p)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self._exited(p, f"{p.spec.name} {how}")
            return
        if p.state == "loading" and self._probe(p.spec):
            elapsed = self._clock() - p.started_at
            with self._lock:
                p.state, p.ever_ready = "ready", True
                self._lock.notify_all()
            again = "restarted, " if p.restarts else ""
            text = f"{again}ready in {elapsed:.1f} s (pid {p.popen.pid}, port {p.spec.port})"
            self._notify(p.spec.name, "ready", text)
            if p.restarts:
                self._say(f"{p.spec.name}: {text}")
            else:
                self._progress.state(p.spec.name, text)

    def _exited(self, p: _Managed, why: str) -> None:
        uptime = self._clock() - p.started_at if p.popen is not None else 0.0
        decision = self.policy.on_exit(previous_failures=p.failures, uptime=uptime, ever_ready=p.ever_ready)
        log_path = self.log_dir / f"{p.spec.name}.log"
        with self._lock:
            p.popen = None
            p.failures = decision.failures
            if decision.restart:
                p.state, p.restarts = "backoff", p.restarts + 1
                p.restart_at = self._clock() + decision.delay
            else:
                p.state = "failed"
                p.error = (
                    f"{p.spec.name} did not start ({decision.failures} tries): {why}\n"
                    f"  last lines of {log_path}:\n{_tail(log_path)}"
                )
            self._lock.notify_all()
        if decision.restart:
            self._say(
                f"{p.spec.name}: {why}; restarting in {decision.delay:.0f} s "
                f"(restart {p.restarts}, log: {log_path})"
            )
            self._notify(p.spec.name, "backoff", f"{why}; restarting")
        else:
            self._say(f"{p.spec.name}: {why}; giving up")
            self._notify(p.spec.name, "failed", f"{why}; gave up restarting it (log: {log_path})")

    def _notify(self, name: str, state: str, why: str) -> None:
        if self.on_state is not None:
            try:
                self.on_state(name, state, why)
            except Exception:  # a listener's bug must not stop the supervision of processes
                logging.getLogger("aifabric.local").exception("state listener failed")

    def _probe(self, spec: ProcessSpec) -> bool:
        conn = http.client.HTTPConnection(spec.host, spec.port, timeout=1.0)
        try:
            conn.request("GET", spec.ready_path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False  # refused or reset while loading
        finally:
            conn.close()

    def _reap_group(self, p: _Managed) -> None:
        """The leader is gone: make sure nothing it forked lingers on (holding its port)."""
        assert p.popen is not None
        _killpg(p.popen.pid, signal.SIGKILL)
        if p.log is not None:
            p.log.close()
            p.log = None

    def _terminate_all(self) -> None:
        live = [p for p in self._procs if p.popen is not None]
        for p in live:
            assert p.popen is not None
            _killpg(p.popen.pid, signal.SIGTERM)
        deadline = self._clock() + self.grace
        for p in live:
            assert p.popen is not None
            try:
                p.popen.wait(timeout=max(0.0, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                self._say(f"{p.spec.name}: still running {self.grace:g} s after SIGTERM; killing it")
        for p in live:
            assert p.popen is not None
            _killpg(p.popen.pid, signal.SIGKILL)  # the leader, if stubborn, and anything it left behind
            p.popen.wait()
            _wait_group_gone(p.popen.pid, self._clock, timeout=5.0)
            if p.log is not None:
                p.log.close()
            with self._lock:
                p.popen, p.log, p.state = None, None, "stopped"
        with self._lock:
            self._lock.notify_all()


def _child_env(spec: ProcessSpec) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in spec.unset_env and not k.upper().startswith(spec.unset_env_prefixes)
    }
    env.update(spec.env)
    return env


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already empty
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, clock: Callable[[], float], timeout: float) -> None:
    """SIGKILL is delivered asynchronously: wait (bounded) until no member of the group is left, so
    that when stop() returns the ports are free. Reparented members are reaped by init, not by us."""
    deadline = clock() + timeout
    while clock() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not _group_has_live_member(pgid):
            return  # only zombies left, waiting for init: they hold no port
        time.sleep(0.02)


def _group_has_live_member(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_bytes()[-8000:].decode("utf-8", "replace")
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
