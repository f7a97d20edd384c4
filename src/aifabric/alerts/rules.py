"""Alert rules: pure functions over the health snapshot, and the tracker that makes each alert fire once.

The runbook's thresholds are the default rules:

    gateway down                                     CRITICAL  (checked from outside: `gateway_down`)
    two or more backends down                        WARNING   (often the network: the runbook's partition)
    a backend on an always-on host down              WARNING   (the embeddings server on motoko)
    a backend on a workstation (always_on: false)    INFO      (powered off is expected, not an incident)
      down or asleep
    a backend serving other model ids than the       WARNING   (the runbook's "Embeddings Return 404")
      config sends it (drift)
    a key's or backend's budget 80% / 100% spent     WARNING / CRITICAL (`budget`, in alerts.budget)

A local model on demand that is not running (asleep, `Dormancy.MODEL_STOPPED`) raises nothing: it was
stopped on purpose and the next request starts it.

`evaluate` says which conditions hold now; `AlertTracker.update` compares with what held before and
returns events only on change: `firing` when a condition starts, `resolved` when it ends, nothing while
it lasts. Every alert carries its severity, a one-line summary and the fix in words. The clock is
passed in; nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from aifabric.config.schema import FabricConfig
from aifabric.config.show import config_secrets, redact_url, redact_values
from aifabric.core import BackendHealth, BackendState, Dormancy, FailureClass
from aifabric.health.power import WakeEvent
from aifabric.health.report import dormancy

__all__ = [
    "Alert",
    "AlertEvent",
    "AlertTracker",
    "Severity",
    "evaluate",
    "gateway_down",
    "wake_alert",
]


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(frozen=True, slots=True)
class Alert:
    """One condition that holds: `key` names it (rule + subject) so it is tracked across evaluations."""

    rule: str  # gateway_down, backends_down, backend_down, workstation_down, model_drift, budget
    subject: str  # the backend, "gateway", or "estate"
    severity: Severity
    summary: str
    fix: str
    since: float = 0.0  # when it started firing (the tracker's clock)

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "subject": self.subject,
            "severity": self.severity.label,
            "summary": self.summary,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """What sinks receive: an alert that started (`firing`) or ended (`resolved`) at `at`."""

    status: Literal["firing", "resolved"]
    alert: Alert
    at: float  # the tracker's clock (monotonic in the gateway)
    timestamp: float | None = None  # wall-clock seconds, for people and other machines

    @property
    def severity(self) -> Severity:
        return self.alert.severity

    def to_json(self) -> dict[str, Any]:
        body = {"status": self.status, **self.alert.to_json()}
        if self.timestamp is not None:
            body["timestamp"] = round(self.timestamp, 3)
        if self.status == "resolved":
            body["duration_seconds"] = round(max(0.0, self.at - self.alert.since), 3)
        return body

    def __str__(self) -> str:
        word = "RESOLVED" if self.status == "resolved" else self.severity.name
        return f"[{word}] {self.alert.summary}" + (
            "" if self.status == "resolved" else f" Fix: {self.alert.fix}"
        )


# -- rules ---------------------------------------------------------------------------------------


def _host_of(config: FabricConfig, backend: str) -> tuple[str | None, bool]:
    """(host name, always_on) of a backend; a backend without a host is treated as always on."""
    b = config.backends.get(backend)
    if b is None or b.host is None:
        return None, True
    host = config.hosts.get(b.host)
    return b.host, host.always_on if host is not None else True


def _fallbacks_of(config: FabricConfig, backend: str) -> list[str]:
    """The fallback roles of the roles this backend serves: where its traffic goes meanwhile."""
    out: dict[str, None] = {}
    for role in config.roles.values():
        if any(t.backend == backend for t in role.targets):
            out.update(dict.fromkeys(role.fallbacks))
    return list(out)


def _backend_down(config: FabricConfig, name: str, health: BackendHealth) -> Alert:
    host, _ = _host_of(config, name)
    backend = config.backends[name]
    where = f"on {host} " if host else ""
    if health.stopped is not None and health.state is BackendState.DOWN:
        # Stopped on purpose (a drill, /admin/backends/NAME/stop): not a fault to chase.
        fix = (
            f"it stays down until started again: POST /admin/backends/{name}/start on the gateway "
            "that runs it (`aifabric drill` starts it at its end). "
            "Requests go to its role's other targets and fallbacks meanwhile."
        )
    elif health.failure is FailureClass.AUTH:
        # It answers, and refuses the gateway's key: restarting it would change nothing.
        fix = (
            f"the backend refused the gateway's credentials: set backends.{name}.api_key in the fabric "
            "file to a key it accepts, then reload (`aifabric config reload`, or SIGHUP). Requests go "
            "to its role's other targets and fallbacks meanwhile."
        )
    else:
        fix = (
            f"run `aifabric health {name}` to see why; restart the {backend.kind} server "
            f"{where}({redact_url(backend.url)}) and check it answers again. "
            "Requests go to its role's other targets and fallbacks meanwhile."
        )
    return Alert(
        rule="backend_down",
        subject=name,
        severity=Severity.WARNING,
        summary=f"backend {name} {where}is down: {health.reason}",
        fix=fix,
    )


def _workstation_down(config: FabricConfig, name: str, health: BackendHealth) -> Alert:
    host, _ = _host_of(config, name)
    backend = config.backends[name]
    fallbacks = _fallbacks_of(config, name)
    meanwhile = (
        f"Requests go to {', '.join(fallbacks)} meanwhile."
        if fallbacks
        else "Its roles have no fallback: their requests fail until it is back."
    )
    state = "asleep" if health.state is BackendState.ASLEEP else "down"
    return Alert(
        rule="workstation_down",
        subject=name,
        severity=Severity.INFO,
        summary=f"backend {name} on workstation {host} is {state} ({health.reason})",
        fix=(
            f"expected while {host} is powered off (always_on: false). If its roles are needed, power "
            f"{host} on and start its {backend.kind} server, then `aifabric health {name}`. {meanwhile}"
        ),
    )


def _backends_down(down: list[str]) -> Alert:
    return Alert(
        rule="backends_down",
        subject="estate",
        severity=Severity.WARNING,
        summary=f"{len(down)} backends are down at once: {', '.join(down)}",
        fix=(
            "several backends failing together often means the network between the gateway and "
            "them (the runbook's partition): check the VPN (`tailscale status`), reach each host, "
            "then `aifabric health` for each backend's reason."
        ),
    )


def _model_drift(name: str, mismatches: list[str]) -> Alert:
    return Alert(
        rule="model_drift",
        subject=name,
        severity=Severity.WARNING,
        summary=f"backend {name} serves other model ids than the config sends it",
        fix="; ".join(mismatches),
    )


def evaluate(
    healths: Mapping[str, BackendHealth], config: FabricConfig, *, down_threshold: int = 2
) -> list[Alert]:
    """Every alert condition that holds in this snapshot (no memory: see `AlertTracker`)."""
    alerts: list[Alert] = []
    down: list[str] = []
    for name, health in sorted(healths.items()):
        if name not in config.backends:
            continue
        if dormancy(health, config.backends[name]) is Dormancy.MODEL_STOPPED:
            continue  # a model on demand not running: how it saves memory, not an incident
        _, always_on = _host_of(config, name)
        if health.state in (BackendState.DOWN, BackendState.ASLEEP):
            if always_on:
                alerts.append(_backend_down(config, name, health))
            else:
                alerts.append(_workstation_down(config, name, health))
        if health.state is BackendState.DOWN:
            # Asleep is expected (a workstation switched off): it never counts towards "several down".
            down.append(name)
        if health.mismatches:
            alerts.append(_model_drift(name, health.mismatches))
    if len(down) >= down_threshold:
        alerts.append(_backends_down(down))
    if not alerts:
        return alerts
    # A reason may quote a backend's error, which may quote the key the gateway sent it ("Incorrect API
    # key provided: sk-..."): every sink, the log and /alerts get the alert with its secrets masked.
    secrets = _secrets_of(config)
    return [
        replace(a, summary=redact_values(a.summary, secrets), fix=redact_values(a.fix, secrets))
        for a in alerts
    ]


# The last config's secrets: evaluate runs every probe round, and the walk of the whole config is done
# once per loaded config (a reload makes a new object). Holding the config keeps its id from reuse.
_last_secrets: tuple[FabricConfig, frozenset[str]] | None = None


def _secrets_of(config: FabricConfig) -> frozenset[str]:
    global _last_secrets
    last = _last_secrets
    if last is None or last[0] is not config:
        last = _last_secrets = (config, config_secrets(config))
    return last[1]


def gateway_down(url: str, detail: str) -> Alert:
    """The gateway cannot report its own death: this alert is raised by whoever checks it from outside."""
    return Alert(
        rule="gateway_down",
        subject="gateway",
        severity=Severity.CRITICAL,
        summary=f"the gateway at {redact_url(url)} is not answering: {detail}",
        fix=(
            "every request of the fabric fails. Restart it (`systemctl restart aifabric`, or "
            "`aifabric up`), read its log for the cause (a config mistake is reported with file and "
            "line: `aifabric config validate`), then `aifabric smoke` to verify."
        ),
    )


def wake_alert(event: WakeEvent) -> Alert:
    """News, not a condition (Monitor.announce): the gateway woke a host (INFO), or could not (WARNING)."""
    if event.ok:
        return Alert(
            rule="host_woken",
            subject=event.host,
            severity=Severity.INFO,
            summary=f"woke host {event.host} {event.why}: {event.how}",
            fix=(
                f"nothing to do: requests go to {event.host} once its backends serve (fallbacks meanwhile). "
                f"To keep it off, remove wake: from hosts.{event.host}"
            ),
        )
    return Alert(
        rule="host_wake_failed",
        subject=event.host,
        severity=Severity.WARNING,
        summary=f"could not wake host {event.host} {event.why}: {event.how}",
        fix=f"check hosts.{event.host}.wake in the fabric file, then `aifabric wake {event.host}` by hand",
    )


# -- tracking ------------------------------------------------------------------------------------


class AlertTracker:
    """Remembers which alerts fire, so each fires once when it starts and resolves once when it ends."""

    def __init__(self) -> None:
        self._active: dict[str, Alert] = {}

    @property
    def active(self) -> list[Alert]:
        """The alerts firing now, worst first."""
        return sorted(self._active.values(), key=lambda a: (-a.severity, a.since, a.key))

    def update(
        self, current: Iterable[Alert], now: float, *, timestamp: float | None = None
    ) -> list[AlertEvent]:
        """Fold in the conditions that hold now; the events to notify (none when nothing changed)."""
        events: list[AlertEvent] = []
        seen: dict[str, Alert] = {}
        for alert in current:
            seen[alert.key] = alert
        for key, alert in seen.items():
            old = self._active.get(key)
            if old is None:
                started = replace(alert, since=now)
                self._active[key] = started
                events.append(AlertEvent("firing", started, now, timestamp))
            elif old.severity != alert.severity:
                # Same subject, different severity (a host's always_on changed on reload): a new alert.
                events.append(AlertEvent("resolved", old, now, timestamp))
                started = replace(alert, since=now)
                self._active[key] = started
                events.append(AlertEvent("firing", started, now, timestamp))
            else:
                # Still firing: keep the start time; the summary may have new details (no new event).
                self._active[key] = replace(alert, since=old.since)
        for key in [k for k in self._active if k not in seen]:
            events.append(AlertEvent("resolved", self._active.pop(key), now, timestamp))
        return events

    # A command-line check (cron every few minutes) keeps the tracker between runs in a file.
    def to_json(self) -> list[dict[str, Any]]:
        return [{**a.to_json(), "since": a.since} for a in self._active.values()]

    @classmethod
    def from_json(cls, data: object) -> AlertTracker:
        tracker = cls()
        if isinstance(data, list):
            for item in data:
                try:
                    alert = Alert(
                        rule=str(item["rule"]),
                        subject=str(item["subject"]),
                        severity=Severity.parse(str(item["severity"])),
                        summary=str(item["summary"]),
                        fix=str(item["fix"]),
                        since=float(item["since"]),
                    )
                except (KeyError, TypeError, ValueError):
                    continue  # a damaged entry is forgotten: at worst an alert fires again
                tracker._active[alert.key] = alert
        return tracker
