"""Alert sinks: where `firing` and `resolved` events go (`monitoring.sinks` in the fabric file).

    log       the gateway's log, at the alert's level (resolved at INFO)
    webhook   POST the event as JSON to `target` (a chat webhook, a pager, an automation)
    file      append the event as one JSON line to `target`
    command   run `target` (split like a shell would, not through one) with the event as JSON on
              stdin and AIFABRIC_ALERT_{STATUS,SEVERITY,RULE,SUBJECT,SUMMARY} in its environment

Each sink takes events of its `min_severity` and above; a resolved event goes wherever its firing went.
A sink that fails (webhook unreachable, command exits non-zero) is logged and never stops the others.
A webhook's URL is shown as its origin only: chat webhooks carry their token in the path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from aifabric.alerts.rules import AlertEvent, Severity
from aifabric.config.schema import AlertSink, MonitoringConfig
from aifabric.errors import FabricError
from aifabric.http.client import UpstreamClient

__all__ = [
    "CommandSink",
    "FileSink",
    "LogSink",
    "Notifier",
    "Sink",
    "WebhookSink",
    "build_sinks",
]

log = logging.getLogger("aifabric.alerts")

SEND_TIMEOUT = 10.0  # seconds a webhook or a command may take before it counts as failed

_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.CRITICAL,
}


class Sink(Protocol):
    min_severity: Severity

    def describe(self) -> str: ...

    async def send(self, event: AlertEvent) -> None:
        """Deliver one event; raise on failure (the notifier logs it and carries on)."""


def _body(event: AlertEvent) -> bytes:
    return orjson.dumps(event.to_json())


class LogSink:
    def __init__(self, min_severity: Severity = Severity.INFO, logger: logging.Logger = log) -> None:
        self.min_severity = min_severity
        self._log = logger

    def describe(self) -> str:
        return "log"

    async def send(self, event: AlertEvent) -> None:
        level = logging.INFO if event.status == "resolved" else _LEVELS[event.severity]
        self._log.log(level, "%s", event)


class WebhookSink:
    def __init__(self, url: str, min_severity: Severity, client: UpstreamClient) -> None:
        self.min_severity = min_severity
        self._url = url
        self._client = client

    def describe(self) -> str:
        parts = urlsplit(self._url)
        return f"webhook {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/..."

    async def send(self, event: AlertEvent) -> None:
        headers = [("content-type", "application/json")]
        resp = await self._client.request("POST", self._url, headers, _body(event), SEND_TIMEOUT)
        try:
            await resp.read()
        finally:
            resp.close()
        if not 200 <= resp.status < 300:
            raise FabricError(f"{self.describe()} answered HTTP {resp.status}")


class FileSink:
    def __init__(self, path: str, min_severity: Severity) -> None:
        self.min_severity = min_severity
        self._path = Path(path).expanduser()

    def describe(self) -> str:
        return f"file {self._path}"

    async def send(self, event: AlertEvent) -> None:
        await asyncio.to_thread(self._append, _body(event) + b"\n")

    def _append(self, line: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One write of the whole line with O_APPEND: lines from several gateways never interleave.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class CommandSink:
    def __init__(self, command: str, min_severity: Severity) -> None:
        self.min_severity = min_severity
        self._argv = shlex.split(command)

    def describe(self) -> str:
        return f"command {self._argv[0] if self._argv else '(empty)'}"

    async def send(self, event: AlertEvent) -> None:
        if not self._argv:
            raise FabricError("the command sink has an empty command")
        env = dict(os.environ)
        env.update(
            AIFABRIC_ALERT_STATUS=event.status,
            AIFABRIC_ALERT_SEVERITY=event.severity.label,
            AIFABRIC_ALERT_RULE=event.alert.rule,
            AIFABRIC_ALERT_SUBJECT=event.alert.subject,
            AIFABRIC_ALERT_SUMMARY=event.alert.summary,
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise FabricError(f"{self.describe()} could not be started: {exc}") from exc
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(_body(event)), SEND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise FabricError(f"{self.describe()} did not finish within {SEND_TIMEOUT:g} s") from None
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-300:]
            raise FabricError(f"{self.describe()} exited with {proc.returncode}: {tail}")


def build_sinks(monitoring: MonitoringConfig, client: UpstreamClient) -> list[Sink]:
    """The configured sinks; with none configured, alerts still reach the log."""
    configured: Sequence[AlertSink] = monitoring.sinks or (AlertSink(kind="log"),)
    sinks: list[Sink] = []
    for sink in configured:
        level = Severity.parse(sink.min_severity)
        if sink.kind == "log":
            sinks.append(LogSink(level))
        elif sink.kind == "webhook":
            sinks.append(WebhookSink(sink.target, level, client))
        elif sink.kind == "file":
            sinks.append(FileSink(sink.target, level))
        else:
            sinks.append(CommandSink(sink.target, level))
    return sinks


class Notifier:
    """Sends events to every sink that wants them, concurrently; failures are logged, not raised."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.failures = 0  # sends that failed, for the gateway's metrics and /alerts

    async def notify(self, events: Iterable[AlertEvent]) -> None:
        sends = [
            self._send(sink, event)
            for event in events
            for sink in self.sinks
            if event.severity >= sink.min_severity
        ]
        if sends:
            await asyncio.gather(*sends)

    async def _send(self, sink: Sink, event: AlertEvent) -> None:
        try:
            await sink.send(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sink boundary: one broken sink must not silence the others
            self.failures += 1
            log.error("alert sink %s failed to deliver %r: %s", sink.describe(), event.alert.key, exc)
