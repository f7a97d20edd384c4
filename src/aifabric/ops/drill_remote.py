"""The runbook's drill for a backend `aifabric up` does not run: its own commands fail and restore it.

    backends:
      wintermute-vllm:
        kind: vllm
        url: http://wintermute:8000/v1
        drill: {fail: "ssh wintermute podman stop vllm", restore: "ssh wintermute podman start vllm"}

`aifabric drill --backend wintermute-vllm --config fabric.yaml [--url URL]` runs the same steps as the
drill of ops.drill against any running gateway (`aifabric serve` or `up`), with the commands in place of
the /admin routes:

    1. baseline    every backend up and the smoke test passes; else stop here
    2. fail        the `fail` command (exit 0 expected)
    3. detection   how long until /status shows the backend down (or asleep, on a host that may be off)
    4. service     the smoke test while it is down: which roles answer through fallbacks
    5. restore     the `restore` command: always run once `fail` was, whatever happened after it
    6. recovery    how long until /status shows it up and the smoke test passes again

Exit 0 only when every step held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aifabric.config.schema import DrillCommands
from aifabric.ops.drill import DrillReport, DrillStep, _Drill

__all__ = ["run_command", "run_remote_drill"]

_COMMAND_TIMEOUT = 120.0


async def run_command(command: str, timeout: float = _COMMAND_TIMEOUT) -> tuple[int | None, str]:
    """Run `command` with the shell: (exit status, or None when it did not finish in time; the end of its
    output).

    The command runs in a process group of its own, killed whole when it overruns `timeout` or the drill
    is interrupted (Ctrl-C cancels us): a `fail` command still running must not stop the backend after
    the drill has restored it."""
    proc = await asyncio.create_subprocess_shell(
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        await _kill(proc)
        return None, ""
    except BaseException:
        await _kill(proc)
        raise
    return proc.returncode, out.decode("utf-8", "replace").strip()[-300:]


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the command and whatever it started (its process group), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _outcome(what: str, code: int | None, output: str) -> tuple[bool, str]:
    # The command itself is not repeated: it may carry a password (IPMI, a plug's API), and the
    # operator has it in the fabric file.
    if code is None:
        return False, f"{what} command did not finish within {_COMMAND_TIMEOUT:g} s"
    if code != 0:
        return False, f"{what} command exited with {code}" + (f": {output}" if output else "")
    return True, f"{what} command exited 0"


class _CommandDrill(_Drill):
    """ops.drill's procedure with the backend's `drill:` commands instead of the /admin routes."""

    def __init__(self, commands: DrillCommands, *args: Any) -> None:
        super().__init__(*args)
        self.commands = commands

    async def choose(self, view: dict[str, Any], wanted: str | None) -> str:
        assert wanted is not None
        if wanted not in (view.get("backends") or {}):
            raise self.fail("choose", f"the gateway at {self.base} has no backend {wanted!r}")
        return wanted

    async def stop(self, name: str) -> None:
        self.stop_sent = True  # from here on, restore runs whatever happens (a failed fail may half-work)
        code, output = await run_command(self.commands.fail)
        ok, detail = _outcome(f"backends.{name}.drill's fail", code, output)
        if not ok:
            raise self.fail(f"fail {name}", detail)
        self.record(DrillStep(f"fail {name}", True, detail))

    async def detect(self, name: str, since: float) -> None:
        found = await self.wait_state(name, frozenset({"down", "asleep"}), since)
        if found is None:
            raise self.fail("detection", f"/status did not show {name} down within {self.timeout:g} s")
        seconds, reason = found
        self.record(DrillStep("detection", True, f"/status shows {name} down ({reason})", round(seconds, 3)))

    async def start(self, name: str) -> None:
        code, output = await run_command(self.commands.restore)
        ok, detail = _outcome(f"backends.{name}.drill's restore", code, output)
        if not ok:
            raise self.fail(f"restore {name}", detail)
        self.report.restarted = True
        if self.report.aborted is not None:
            detail += f" (the drill stopped early: {self.report.aborted}; restoring {name})"
        self.record(DrillStep(f"restore {name}", True, detail))

    async def _start_again(self, name: str) -> None:
        self.started_at = self.clock()
        try:
            await self.start(name)
        except Exception:  # _Abort: recorded by start(); the operator must restore it by hand
            self.report.notes.append(
                f"could not restore {name}: run its restore command (backends.{name}.drill.restore) by hand"
            )
            return
        if self.report.aborted is not None:
            self.report.notes.append(f"the drill stopped early; {name} was restored")


async def run_remote_drill(
    url: str,
    backend: str,
    commands: DrillCommands,
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    request_timeout: float = 60.0,
    poll: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_step: Callable[[DrillStep], None] | None = None,
) -> DrillReport:
    """Run the drill on `backend` through its commands against the gateway at `url` (see the module
    docstring). Never raises for what it finds: that is the report."""
    drill = _CommandDrill(commands, url, api_key, timeout, request_timeout, poll, clock, sleep, on_step)
    return await drill.run(backend)
