"""The live view of a running gateway, for a terminal: `aifabric status`.

It reads what the gateway itself believes, not what a fresh probe would say: `GET /status` (the health
view with the routing table's targets: ejection, requests in flight, latency), falling back to
`GET /health` on a gateway without it, and `GET /alerts` when the gateway has that route.

Exit status, as `aifabric health`, plus the runbook's CRITICAL "LiteLLM down":
    0  every backend up
    1  degraded, loading or a workstation asleep
    2  a backend down, or serving other model ids than the config sends it
    3  the gateway itself is unreachable or not answering its health routes: all requests fail
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aifabric.core.exit_codes import ATTENTION, BROKEN, OK, UNREACHABLE
from aifabric.errors import UpstreamFailure
from aifabric.health.report import render_table
from aifabric.http.client import UpstreamClient
from aifabric.tenancy.limitsync import LATE_ROUNDS

__all__ = ["GatewayStatus", "fetch_status", "gateway_status", "render_status"]

_BROKEN_STATES = frozenset({"down", "unknown"})
_ATTENTION_STATES = frozenset({"degraded", "loading", "asleep"})


@dataclass
class GatewayStatus:
    """What `url` answered. `view` is its /status (or /health) JSON; `alerts` is None when the gateway
    has no /alerts route, else the active alerts."""

    url: str
    error: str | None = None
    view: dict[str, Any] | None = None
    route: str = ""  # which route answered: "/status" or "/health"
    alerts: list[dict[str, Any]] | None = None
    alerts_error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.view is not None

    @property
    def exit_code(self) -> int:
        if self.view is None:
            return UNREACHABLE
        code = self.view.get("exit_code")
        if isinstance(code, int) and code in (OK, ATTENTION, BROKEN):
            return code
        return _exit_from_backends(self.view.get("backends") or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "exit_code": self.exit_code,
            "error": self.error,
            "route": self.route or None,
            "view": self.view,
            "alerts": self.alerts,
            "alerts_error": self.alerts_error,
        }


def _exit_from_backends(backends: Mapping[str, Any]) -> int:
    """The exit status from backend entries alone (for a view without `exit_code`)."""
    worst = OK
    for entry in backends.values():
        if entry.get("state") in _BROKEN_STATES or entry.get("mismatches"):
            return BROKEN
        if entry.get("state") in _ATTENTION_STATES:
            worst = ATTENTION
    return worst


async def _get(
    client: UpstreamClient, url: str, headers: list[tuple[str, str]], timeout: float
) -> tuple[int, bytes]:
    status, _, body = await client.fetch("GET", url, headers, b"", timeout=timeout)
    return status, body


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def fetch_status(url: str, *, timeout: float = 10.0, api_key: str | None = None) -> GatewayStatus:
    """Ask the gateway at `url` (its base, with or without `/v1`) how it is. Never raises for an
    unreachable or misbehaving gateway: that is the answer (`error`, exit code 3)."""
    base = url.rstrip("/")
    base = base.removesuffix("/v1")
    headers = [("authorization", f"Bearer {api_key}")] if api_key else []
    status = GatewayStatus(base)
    client = UpstreamClient(connect_timeout=min(timeout, 3.0))
    try:
        for route in ("/status", "/health"):
            try:
                code, body = await _get(client, base + route, headers, timeout)
            except UpstreamFailure as exc:
                status.error = f"unreachable ({exc.failure}: {exc.detail})"
                return status
            if code == 404 and route == "/status":
                continue  # an older gateway: /health has the same keys, without the targets
            if code in (401, 403):
                status.error = (
                    f"answered HTTP {code} to GET {route}: its operator views need an admin key "
                    "(one of gateway.admin_keys): pass it with --api-key"
                )
                return status
            view = _json_object(body) if code == 200 else None
            if view is None or "backends" not in view:
                what = f"HTTP {code}" if code != 200 else "something that is not aifabric's health view"
                status.error = f"answered {what} to GET {route}"
                return status
            status.view, status.route = view, route
            break
        await _fetch_alerts(client, base, headers, timeout, status)
        return status
    finally:
        await client.aclose()


async def _fetch_alerts(
    client: UpstreamClient, base: str, headers: list[tuple[str, str]], timeout: float, status: GatewayStatus
) -> None:
    try:
        code, body = await _get(client, base + "/alerts", headers, timeout)
    except UpstreamFailure as exc:
        status.alerts_error = f"{exc.failure}: {exc.detail}"
        return
    if code == 404:
        return  # this gateway has no alerting
    if code != 200:
        status.alerts_error = f"HTTP {code}"
        return
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        status.alerts_error = "not JSON"
        return
    # A list, or {"alerts": [...]} / {"active": [...]}: the shapes the status page reads too.
    if isinstance(payload, dict):
        payload = payload.get("alerts", payload.get("active", []))
    status.alerts = [a for a in payload if isinstance(a, dict)] if isinstance(payload, list) else []


def gateway_status(url: str, *, timeout: float = 10.0, api_key: str | None = None) -> GatewayStatus:
    return asyncio.run(fetch_status(url, timeout=timeout, api_key=api_key))


# -- rendering ------------------------------------------------------------------------------------


def _field(entry: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = entry.get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _targets(targets: Mapping[str, Any]) -> list[str]:
    rows = [("TARGET", "ROUTABLE", "OUTLIER", "EJECTIONS", "IN FLIGHT", "LATENCY", "OK", "FAILED")]
    for name, t in targets.items():
        ejected = t.get("ejected_for_seconds")
        outlier = str(t.get("outlier", "-")) + (f" ({ejected:g} s left)" if ejected else "")
        latency = t.get("ewma_latency_ms")
        rows.append(
            (
                name,
                "yes" if t.get("available") else "no",
                outlier,
                str(t.get("ejections", 0)),
                str(t.get("outstanding", 0)),
                "-" if latency is None else f"{latency:g} ms",
                str(t.get("successes", 0)),
                str(t.get("failures", 0)),
            )
        )
    return _columns(rows)


def _alerts(alerts: list[dict[str, Any]]) -> list[str]:
    if not alerts:
        return ["no active alerts"]
    rows = [("SEVERITY", "ALERT", "ON", "WHAT")]
    for a in alerts:
        rows.append(
            (
                _field(a, "severity", "level").upper() or "INFO",
                _field(a, "name", "rule", "title"),
                _field(a, "subject", "backend", "role", "target"),
                _field(a, "message", "summary", "description", "reason"),
            )
        )
    return _columns(rows)


def _tenancy(view: object) -> list[str]:
    """Lines only when keys or limit counters need attention (a store out of reach)."""
    if not isinstance(view, dict):
        return []
    out = []
    keys = view.get("keys")
    if isinstance(keys, dict) and not keys.get("reachable", True):
        out.append(
            f"keys: the key store ({keys.get('store')}) cannot be read, the {keys.get('keys')} keys "
            f"last read are honoured: {keys.get('error')}"
        )
    limits = view.get("limits")
    if isinstance(limits, dict) and not limits.get("reachable", True):
        out.append(
            f"limits: not shared ({limits.get('shared')} unreachable), this process enforces "
            f"{limits.get('share')} of every limit: {limits.get('error')}"
        )
    late = limits.get("late_rounds", 0) if isinstance(limits, dict) else 0
    if isinstance(late, int) and late >= LATE_ROUNDS:
        out.append(
            f"limits: another gateway process has not published its counts on this one's rounds for "
            f"{late} rounds (stalled, stopped, or clocks apart: keep them in step with NTP); limits "
            "are split from its last counts and may be passed by a request or two"
        )
    concurrency = view.get("concurrency")
    if isinstance(concurrency, dict) and not concurrency.get("reachable", True):
        out.append(
            f"concurrency: not shared ({concurrency.get('shared')} unreachable), this process allows "
            f"its share of each key's requests in flight: {concurrency.get('error')}"
        )
    return ["", *out] if out else []


def render_status(status: GatewayStatus) -> list[str]:
    """Lines for a terminal: the gateway, its backends, its targets, its alerts, then the verdict."""
    if status.view is None:
        return [
            f"CRITICAL: gateway {status.url} is down: {status.error}",
            "  every request to the fabric fails. Check, in order:",
            "    systemctl status aifabric         (is it running? restart: systemctl restart aifabric)",
            "    journalctl -u aifabric -n 50      (why it stopped)",
            "    aifabric doctor --config FILE     (why it will not start: config, secrets, port)",
            f"exit {UNREACHABLE}",
        ]
    view = status.view
    gw = view.get("gateway") or {}
    about = [
        str(gw[k]) if k != "pid" else f"pid {gw[k]}"
        for k in ("name", "pid")
        if isinstance(gw, dict) and gw.get(k) is not None
    ]
    out = [f"gateway {status.url}" + (f" ({', '.join(about)})" if about else "")]
    requests = view.get("requests")
    if isinstance(requests, dict) and "total" in requests:
        workers = requests.get("workers")
        summed = f" (all {workers} workers)" if isinstance(workers, int) and workers > 1 else ""
        out.append(f"requests: {requests['total']} answered, {requests.get('errors', 0)} errors{summed}")
    out.append("")
    table = render_table(view)
    # render_table ends with a blank line and its verdict: keep the verdict for the very end.
    verdict = table[-1] if len(table) >= 2 and table[-2] == "" else ""
    out.extend(table[:-2] if verdict else table)
    targets = view.get("targets")
    if isinstance(targets, dict) and targets:
        out.append("")
        out.extend(_targets(targets))
    out.extend(_tenancy(view.get("tenancy")))
    if status.alerts is not None:
        out.append("")
        out.extend(_alerts(status.alerts))
    elif status.alerts_error:
        out.append("")
        out.append(f"alerts: the gateway answered {status.alerts_error} to GET /alerts")
    out.append("")
    out.append(verdict or f"exit {status.exit_code}")
    return out
