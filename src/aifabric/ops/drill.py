"""The runbook's quarterly "Runbook Testing" as code: fail one local backend on purpose, and time how the
fabric notices and recovers. Against a running `aifabric up` (it needs the gateway's /admin routes).

    1. baseline    every backend up (GET /status) and the smoke test passes; else stop here
    2. stop        POST /admin/backends/NAME/stop (the runbook's "stop vLLM on one backend")
    3. detection   how long until /status shows NAME down
    4. service     the smoke test while it is down: which roles still answer (through their other
                   targets or fallbacks), which fail; a role with nowhere else to go is expected to fail
    5. start       POST /admin/backends/NAME/start (the recovery procedure: `up` restarts it)
    6. recovery    how long until /status shows NAME up and the smoke test passes again

The backend is started again whatever happens after the stop (an error, a timeout, Ctrl-C): the drill
must not leave the fabric worse than it found it. The drill passes when detection and recovery both
happened within the timeout; step 4 is reported, and flagged when a role that has somewhere else to go
did not answer, but a role with no fallback failing is the fabric's design, not the drill's failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient
from aifabric.ops.smoke import SmokeReport, run_smoke
from aifabric.ops.status import GatewayStatus, fetch_status

__all__ = ["DrillReport", "DrillStep", "choose_backend", "run_drill"]

_SERVING = frozenset({"up", "degraded"})


@dataclass
class DrillStep:
    name: str
    ok: bool
    detail: str
    seconds: float | None = None
    counted: bool = True  # whether it decides the drill's verdict (the service step does not)


@dataclass
class DrillReport:
    gateway: str
    backend: str | None = None
    steps: list[DrillStep] = field(default_factory=list)
    # Roles and aliases while the backend was down: name -> how it was served, or why it failed.
    answered: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    expected_failures: list[str] = field(default_factory=list)  # nowhere else to go: no fallback
    restarted: bool = False  # the start was sent (and accepted) after the stop
    notes: list[str] = field(default_factory=list)
    aborted: str | None = None  # why the drill stopped before the end

    def step(self, name: str) -> DrillStep | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def detected(self) -> bool:
        step = self.step("detection")
        return step is not None and step.ok

    @property
    def recovered(self) -> bool:
        step = self.step("recovery")
        return step is not None and step.ok

    @property
    def ok(self) -> bool:
        return self.aborted is None and self.detected and self.recovered

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ok=self.ok, detected=self.detected, recovered=self.recovered)
        return out


class _Abort(Exception):
    """Ends the drill early with this reason (already recorded as a failed step)."""


def _roles_of(view: Mapping[str, Any]) -> dict[str, Any]:
    roles = view.get("roles")
    return roles if isinstance(roles, dict) else {}


def _backends_of(role: Mapping[str, Any]) -> list[str]:
    return [str(t.get("backend")) for t in role.get("targets") or [] if isinstance(t, dict)]


def choose_backend(view: Mapping[str, Any], local: list[str]) -> str | None:
    """The default victim: the first local backend that serves a role with fallbacks (so the drill shows
    a fallback answering), else the first local backend."""
    for role in _roles_of(view).values():
        if role.get("fallbacks"):
            for backend in _backends_of(role):
                if backend in local:
                    return backend
    return local[0] if local else None


def _stranded(view: Mapping[str, Any], backend: str) -> set[str]:
    """Roles with nowhere to go but `backend`: every target of the role and of its fallbacks is on it."""
    roles = _roles_of(view)

    def reachable(name: str, seen: set[str]) -> set[str]:
        if name in seen or name not in roles:
            return set()
        seen.add(name)
        out = set(_backends_of(roles[name]))
        for fallback in roles[name].get("fallbacks") or []:
            out |= reachable(str(fallback), seen)
        return out

    return {name for name in roles if reachable(name, set()) <= {backend}}


class _Drill:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout: float,
        request_timeout: float,
        poll: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_step: Callable[[DrillStep], None] | None,
    ) -> None:
        self.base = url.rstrip("/").removesuffix("/v1")
        self.api_key = api_key
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.poll = poll
        self.clock = clock
        self.sleep = sleep
        self.on_step = on_step
        self.report = DrillReport(self.base)
        self.stop_sent = False  # from here on, the backend must be started again whatever happens
        self.stop_refused = False  # ... unless the gateway answered that it did not stop it
        self.started_at = 0.0
        self.client = UpstreamClient(connect_timeout=min(request_timeout, 3.0))

    def record(self, step: DrillStep) -> DrillStep:
        self.report.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step

    def fail(self, name: str, detail: str, seconds: float | None = None) -> _Abort:
        self.record(DrillStep(name, False, detail, seconds))
        self.report.aborted = detail
        return _Abort(detail)

    async def status(self) -> GatewayStatus:
        return await fetch_status(self.base, timeout=self.request_timeout, api_key=self.api_key)

    async def smoke(self) -> SmokeReport:
        return await run_smoke(self.base, api_key=self.api_key, timeout=self.request_timeout)

    async def admin(self, method: str, path: str) -> tuple[int, Any]:
        headers = [("authorization", f"Bearer {self.api_key}")] if self.api_key else []
        status, _, body = await self.client.fetch(
            method, self.base + path, headers, b"", self.request_timeout
        )
        try:
            return status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, {"error": {"message": body[:200].decode("utf-8", "replace")}}

    @staticmethod
    def error_of(status: int, payload: Any) -> str:
        error = payload.get("error") if isinstance(payload, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return f"HTTP {status}: {message or payload}"

    # -- the steps --------------------------------------------------------------------------------

    async def baseline(self) -> dict[str, Any]:
        started = self.clock()
        status = await self.status()
        if status.view is None:
            raise self.fail("baseline", f"the gateway at {self.base} does not answer: {status.error}")
        backends = status.view.get("backends") or {}
        unwell = {
            name: f"{entry.get('state')} ({entry.get('reason')})"
            for name, entry in backends.items()
            if entry.get("state") != "up" or entry.get("mismatches")
        }
        if unwell:
            listed = "; ".join(f"{n}: {s}" for n, s in unwell.items())
            raise self.fail("baseline", f"the fabric is not healthy; fix that first. Not up: {listed}")
        smoke = await self.smoke()
        if not smoke.ok:
            bad = "; ".join(f"{c.name}: {c.detail}" for c in smoke.checks if not c.ok)
            if any(c.status in (401, 403) for c in smoke.checks if not c.ok):
                # The fabric may be fine: the drill was not let in (the key store or api_keys close it).
                raise self.fail(
                    "baseline",
                    "the gateway wants an API key: pass --api-key with a key of gateway.api_keys or one "
                    "made by `aifabric keys create --scope admin` (or set FABRIC_MASTER_KEY). "
                    f"Smoke test: {bad}",
                )
            raise self.fail("baseline", f"the fabric is not healthy; fix that first. Smoke test: {bad}")
        detail = f"{len(backends)} backend(s) up; smoke test: all {len(smoke.checks)} checks passed"
        self.record(DrillStep("baseline", True, detail, round(self.clock() - started, 3)))
        return status.view

    async def choose(self, view: dict[str, Any], wanted: str | None) -> str:
        try:
            code, payload = await self.admin("GET", "/admin/backends")
        except UpstreamFailure as exc:
            raise self.fail("choose", f"GET /admin/backends failed: {exc.detail}") from exc
        if code == 404:
            raise self.fail(
                "choose",
                "this gateway has no /admin routes: the drill needs a gateway run by `aifabric up` "
                "(it stops and starts one of the backends `up` runs)",
            )
        if code != 200:
            raise self.fail("choose", f"GET /admin/backends: {self.error_of(code, payload)}")
        local = list((payload.get("backends") or {}) if isinstance(payload, dict) else {})
        if wanted is not None:
            if wanted not in local:
                where = "a remote backend" if wanted in (view.get("backends") or {}) else "not a backend"
                raise self.fail(
                    "choose",
                    f"{wanted!r} is {where} of this fabric; `aifabric up` runs: {', '.join(local) or 'none'}",
                )
            return wanted
        chosen = choose_backend(view, local)
        if chosen is None:
            raise self.fail("choose", "this fabric has no local backends: nothing for the drill to stop")
        return chosen

    async def stop(self, name: str) -> None:
        self.stop_sent = True
        code, payload = await self.admin("POST", f"/admin/backends/{name}/stop")
        if code != 202:
            self.stop_refused = True
            raise self.fail(f"stop {name}", self.error_of(code, payload))
        self.record(DrillStep(f"stop {name}", True, f"POST /admin/backends/{name}/stop accepted"))

    async def wait_state(self, name: str, states: frozenset[str], since: float) -> tuple[float, str] | None:
        """Poll /status until `name` is in one of `states`: (seconds since `since`, its reason)."""
        while True:
            status = await self.status()
            entry = ((status.view or {}).get("backends") or {}).get(name) or {}
            if entry.get("state") in states:
                return self.clock() - since, str(entry.get("reason") or "")
            if self.clock() - since >= self.timeout:
                return None
            await self.sleep(self.poll)

    async def wait_exited(self, name: str, since: float) -> float | None:
        """Poll /admin/backends until the stopped backend's process is gone: seconds since `since`."""
        while True:
            code, payload = await self.admin("GET", "/admin/backends")
            backends = payload.get("backends") if isinstance(payload, dict) else None
            entry = backends.get(name) if isinstance(backends, dict) else None
            if code == 200 and isinstance(entry, dict) and entry.get("pid") is None:
                return self.clock() - since
            if self.clock() - since >= self.timeout:
                return None
            await self.sleep(self.poll)

    async def detect(self, name: str, since: float) -> None:
        found = await self.wait_state(name, frozenset({"down"}), since)
        if found is None:
            raise self.fail("detection", f"/status did not show {name} down within {self.timeout:g} s")
        seconds, reason = found
        # The gateway stops routing to it at the SIGTERM; the process may still finish what it was doing.
        # Only once it is gone does the smoke test below show what the fabric does without it.
        exited = await self.wait_exited(name, since)
        if exited is None:
            raise self.fail(
                "detection", f"the process of {name} was still running {self.timeout:g} s after the stop"
            )
        detail = f"/status shows {name} down ({reason}); its process exited after {exited:.1f} s"
        self.record(DrillStep("detection", True, detail, round(seconds, 3)))

    async def service(self, view: dict[str, Any], name: str) -> None:
        started = self.clock()
        smoke = await self.smoke()
        aliases = view.get("aliases") or {}
        stranded = _stranded(view, name)
        report = self.report
        report.expected_failures = sorted(
            n for c in smoke.checks if (n := c.name) in stranded or aliases.get(n) in stranded
        )
        for check in smoke.checks:
            if check.kind == "models":
                continue
            if check.ok:
                via = f"{check.role}/{check.backend}" if check.backend else "?"
                report.answered[check.name] = f"via {via}"
            else:
                report.failed[check.name] = check.detail
        surprising = [n for n in report.failed if n not in report.expected_failures]
        parts = []
        if report.answered:
            parts.append("answered: " + ", ".join(f"{n} {v}" for n, v in report.answered.items()))
        if report.failed:
            parts.append(
                "failed: "
                + ", ".join(
                    n + (" (no fallback)" if n in report.expected_failures else "") for n in report.failed
                )
            )
        if surprising:
            parts.append(f"{len(surprising)} of them had somewhere else to go")
        detail = "; ".join(parts) or "the gateway lists no roles"
        self.record(
            DrillStep(
                "service while down", not surprising, detail, round(self.clock() - started, 3), counted=False
            )
        )

    async def start(self, name: str) -> None:
        code, payload = await self.admin("POST", f"/admin/backends/{name}/start")
        if code != 202:
            raise self.fail(f"start {name}", self.error_of(code, payload))
        self.report.restarted = True
        detail = f"POST /admin/backends/{name}/start accepted"
        if self.report.aborted is not None:
            detail += f" (the drill stopped early: {self.report.aborted}; starting {name} again)"
        self.record(DrillStep(f"start {name}", True, detail))

    async def recover(self, name: str, since: float) -> None:
        found = await self.wait_state(name, _SERVING, since)
        if found is None:
            raise self.fail("recovery", f"/status did not show {name} up within {self.timeout:g} s")
        up_after, _ = found
        while True:
            smoke = await self.smoke()
            elapsed = self.clock() - since
            if smoke.ok:
                detail = (
                    f"{name} up after {up_after:.1f} s; smoke test: all {len(smoke.checks)} checks "
                    f"passed after {elapsed:.1f} s"
                )
                self.record(DrillStep("recovery", True, detail, round(elapsed, 3)))
                return
            if elapsed >= self.timeout:
                bad = "; ".join(f"{c.name}: {c.detail}" for c in smoke.checks if not c.ok)
                raise self.fail(
                    "recovery",
                    f"{name} up after {up_after:.1f} s, but the smoke test still fails after "
                    f"{self.timeout:g} s: {bad}",
                    round(elapsed, 3),
                )
            await self.sleep(self.poll)

    async def run(self, wanted: str | None) -> DrillReport:
        try:
            view = await self.baseline()
            name = await self.choose(view, wanted)
            self.report.backend = name
            stopped_at = self.clock()
            try:
                await self.stop(name)
                await self.detect(name, stopped_at)
                await self.service(view, name)
            except BaseException as exc:  # Ctrl-C (asyncio.run cancels us), a bug: the start below still runs
                if self.report.aborted is None:
                    stopped = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
                    self.report.aborted = "interrupted" if stopped else f"{type(exc).__name__}: {exc}"
                raise
            finally:
                # Whatever happened since the stop (a timeout, an error, Ctrl-C): start it again.
                if self.stop_sent and not self.stop_refused:
                    await self._start_again(name)
            if self.report.restarted:
                await self.recover(name, self.started_at)
        except _Abort:
            pass
        except UpstreamFailure as exc:  # the admin routes stopped answering: the gateway itself went away
            detail = f"the gateway stopped answering: {exc.detail}"
            self.record(DrillStep("gateway", False, detail))
            self.report.aborted = detail
        finally:
            await self.client.aclose()
        return self.report

    async def _start_again(self, name: str) -> None:
        self.started_at = self.clock()
        try:
            await self.start(name)
        except _Abort:
            self.report.notes.append(
                f"could not start {name} again: start it with "
                f"curl -X POST {self.base}/admin/backends/{name}/start (or restart `aifabric up`)"
            )
            return
        except UpstreamFailure as exc:
            self.report.notes.append(
                f"could not start {name} again ({exc.detail}): start it with "
                f"curl -X POST {self.base}/admin/backends/{name}/start (or restart `aifabric up`)"
            )
            return
        if self.report.aborted is not None:
            self.report.notes.append(f"the drill stopped early; {name} was started again")


async def run_drill(
    url: str,
    *,
    api_key: str | None = None,
    backend: str | None = None,
    timeout: float = 120.0,
    request_timeout: float = 60.0,
    poll: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_step: Callable[[DrillStep], None] | None = None,
) -> DrillReport:
    """Run the drill against the `aifabric up` gateway at `url`. Never raises for what it finds: that
    is the report. `timeout` bounds detection and recovery each; `on_step` sees each step as it ends."""
    drill = _Drill(url, api_key, timeout, request_timeout, poll, clock, sleep, on_step)
    return await drill.run(backend)
