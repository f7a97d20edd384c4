"""The monitor: evaluates the alert rules every `monitoring.interval` and notifies the sinks.

It runs inside the gateway beside the health checker and reads the same `BackendHealth` objects
(never probes by itself). The gateway serves what it sees at `GET /alerts`. A gateway cannot report
its own death, so the runbook's "gateway down: CRITICAL" is checked from outside by
`aifabric health --gateway URL` (cron or a systemd timer on another machine): `watch_gateway` below,
which keeps its fire-once memory in a small state file between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aifabric.alerts.rules import Alert, AlertEvent, AlertTracker, Severity, evaluate, gateway_down
from aifabric.alerts.sinks import Notifier, build_sinks
from aifabric.config.schema import FabricConfig
from aifabric.core import BackendHealth, exit_codes
from aifabric.core.paths import state_dir
from aifabric.http.client import UpstreamClient

__all__ = ["GatewayCheck", "Monitor", "check_gateway", "default_state_path", "watch_gateway"]

log = logging.getLogger("aifabric.alerts")

RECENT = 100  # events kept for GET /alerts


class Monitor:
    """Alert rules over the live health snapshot; each alert notified once on firing, once on resolving."""

    def __init__(
        self,
        config: FabricConfig,
        healths: Callable[[], Mapping[str, BackendHealth]],
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        leader: Callable[[], bool] = lambda: True,
        extra: Callable[[], list[Alert]] | None = None,
    ) -> None:
        self.config = config
        self._extra = extra  # rules over other inputs than health (the usage ledger's budgets)
        self.notifier = notifier
        # With several gateway workers or replicas every one evaluates (each serves GET /alerts), and
        # only the one holding the probe lease notifies, so a sink hears of an alert once, not N times.
        self._leader = leader
        self._healths = healths
        self._clock = clock
        self._wall = wall
        self.tracker = AlertTracker()
        self.recent: deque[AlertEvent] = deque(maxlen=RECENT)
        self.evaluations = 0

    def update_config(self, config: FabricConfig, notifier: Notifier | None = None) -> None:
        """Follow a reload: new rules' inputs (hosts, roles) and, if given, new sinks."""
        self.config = config
        if notifier is not None:
            self.notifier = notifier

    def evaluate(self) -> list[AlertEvent]:
        """Evaluate the rules now; the events (firing/resolved) since the last evaluation."""
        alerts = evaluate(self._healths(), self.config)
        if self._extra is not None:
            alerts.extend(self._extra())
        events = self.tracker.update(alerts, self._clock(), timestamp=self._wall())
        self.recent.extend(events)
        self.evaluations += 1
        return events

    async def tick(self) -> list[AlertEvent]:
        events = self.evaluate()
        if events and self._leader():
            await self.notifier.notify(events)
        return events

    async def announce(self, alert: Alert) -> None:
        """An event that is news, not a condition that holds (e.g. a host woken): notified once, listed
        in /alerts' recent events, never tracked as active nor resolved."""
        alert = dataclasses.replace(alert, since=self._clock())
        event = AlertEvent("firing", alert, self._clock(), timestamp=self._wall())
        self.recent.append(event)
        if self._leader():
            await self.notifier.notify([event])

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate every `monitoring.interval` until `stop` is set (first after one interval, when the
        health checker has had time to probe: "not probed yet" is not an alert)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.monitoring.interval)
            if stop.is_set():
                return
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a rule must not stop monitoring
                log.exception("alert evaluation failed")

    def view(self) -> dict[str, Any]:
        """The JSON of GET /alerts: what fires now (worst first) and the latest events."""
        now = self._clock()
        return {
            "active": [
                {**a.to_json(), "for_seconds": round(max(0.0, now - a.since), 3)} for a in self.tracker.active
            ],
            "recent": [e.to_json() for e in reversed(self.recent)],
            "interval_seconds": self.config.monitoring.interval,
            "evaluations": self.evaluations,
            "sinks": [s.describe() for s in self.notifier.sinks],
            "sink_failures": self.notifier.failures,
        }


# -- the gateway, checked from outside ------------------------------------------------------------


async def check_gateway(url: str, client: UpstreamClient, timeout: float = 5.0) -> tuple[str | None, Any]:
    """(None, its /alerts JSON or None) when the gateway answers its liveness route; else (why, None)."""
    base = url.rstrip("/")
    try:
        resp = await client.request("GET", base + "/health/live", [], b"", timeout)
        try:
            await resp.read()
        finally:
            resp.close()
    except Exception as exc:  # the boundary: whatever failed, the gateway did not answer
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None
    if resp.status != 200:
        return f"its liveness route answered HTTP {resp.status}", None
    alerts: Any = None
    with contextlib.suppress(Exception):  # an older gateway without /alerts is still up
        resp = await client.request("GET", base + "/alerts", [], b"", timeout)
        try:
            body = await resp.read()
        finally:
            resp.close()
        if resp.status == 200:
            alerts = json.loads(body)
    return None, alerts


class GatewayCheck:
    """The outcome of one outside check: the gateway's own active alerts, or the CRITICAL one."""

    def __init__(self, url: str, down: str | None, alerts: list[dict[str, Any]], events: list[AlertEvent]):
        self.url = url
        self.down = down
        self.alerts = alerts
        self.events = events

    @property
    def exit_status(self) -> int:
        """As `aifabric health`: 0 fine, 1 something to look at (INFO), 2 broken (WARNING or worse)."""
        if self.down is not None:
            return exit_codes.BROKEN
        worst = max((Severity.parse(str(a.get("severity", "info"))) for a in self.alerts), default=None)
        if worst is None:
            return exit_codes.OK
        return exit_codes.ATTENTION if worst is Severity.INFO else exit_codes.BROKEN

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.url,
            "up": self.down is None,
            "reason": self.down,
            "alerts": self.alerts,
            "notified": [e.to_json() for e in self.events],
        }

    def lines(self) -> list[str]:
        if self.down is not None:
            alert = gateway_down(self.url, self.down)
            return [f"CRITICAL {alert.summary}", f"    fix: {alert.fix}"]
        out = [f"gateway {self.url}: up"]
        for a in self.alerts:
            out.append(f"{str(a.get('severity', '')).upper():9}{a.get('summary', '')}")
            out.append(f"    fix: {a.get('fix', '')}")
        if not self.alerts:
            out.append("no active alerts")
        return out


def default_state_path(config: FabricConfig | None) -> Path:
    """Where the outside check remembers what it notified: the log dir, else the user's state dir."""
    if config is not None and config.monitoring.log_dir:
        return Path(config.monitoring.log_dir).expanduser() / "gateway-watch.json"
    return state_dir() / "gateway-watch.json"


async def watch_gateway(
    url: str,
    config: FabricConfig | None,
    *,
    state_path: Path | None = None,
    timeout: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> GatewayCheck:
    """Check a running gateway from outside; notify the config's sinks when it goes down or comes
    back (once each, remembered in `state_path` between runs)."""
    client = UpstreamClient(connect_timeout=timeout)
    try:
        down, body = await check_gateway(url, client, timeout)
        alerts: list[dict[str, Any]] = []
        if isinstance(body, dict) and isinstance(body.get("active"), list):
            alerts = [a for a in body["active"] if isinstance(a, dict)]
        events: list[AlertEvent] = []
        if config is not None:
            path = state_path or default_state_path(config)
            tracker = _load_tracker(path)
            current: list[Alert] = [gateway_down(url, down)] if down is not None else []
            now = clock()
            events = tracker.update(current, now, timestamp=now)
            if events:
                await Notifier(build_sinks(config.monitoring, client)).notify(events)
            _save_tracker(path, tracker)
        return GatewayCheck(url, down, alerts, events)
    finally:
        await client.aclose()


def _load_tracker(path: Path) -> AlertTracker:
    try:
        return AlertTracker.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return AlertTracker()


def _save_tracker(path: Path, tracker: AlertTracker) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(tracker.to_json()))
        tmp.replace(path)
    except OSError as exc:  # notifying matters more than remembering: say so and carry on
        log.warning("could not save the alert state to %s: %s", path, exc)
