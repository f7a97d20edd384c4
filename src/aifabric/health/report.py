"""The health view: one JSON shape for machines (CLI `--json`, the gateway's health route) and a
table for people, both from the same `BackendHealth` objects.

Exit status, as the runbook's `check_vllm_backends.sh` is used in scripts:
    0  every backend up
    1  something needs a look but nothing is broken: degraded (saturated), loading, a workstation asleep
    2  a backend down (or never probed), or serving other model ids than the config sends it
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from aifabric.backends.base import adapter_for
from aifabric.config.schema import BackendConfig, FabricConfig
from aifabric.config.show import config_secrets, redact_url, redact_values
from aifabric.core import BackendHealth, BackendState, Dormancy
from aifabric.core.exit_codes import ATTENTION, BROKEN, OK
from aifabric.health.checker import configured_models

__all__ = [
    "TargetView",
    "dormancy",
    "exit_status",
    "health_view",
    "render_table",
]

_ATTENTION = frozenset({BackendState.DEGRADED, BackendState.LOADING, BackendState.ASLEEP})


def backend_status(health: BackendHealth) -> int:
    if health.state in (BackendState.DOWN, BackendState.UNKNOWN) or health.mismatches:
        return BROKEN
    if health.state in _ATTENTION:
        return ATTENTION
    return OK


def exit_status(healths: Mapping[str, BackendHealth]) -> int:
    """0 all up, 1 degraded/loading/asleep, 2 down or mismatched (the worst backend decides)."""
    return max((backend_status(h) for h in healths.values()), default=OK)


def dormancy(health: BackendHealth, backend: BackendConfig | None) -> Dormancy | None:
    """Why the backend does not serve now on purpose (see `Dormancy`), or None when it serves or is
    out of service for real (down, loading, unknown)."""
    if health.engine_asleep:
        return Dormancy.ENGINE_ASLEEP
    if health.state is not BackendState.ASLEEP:
        return None
    if health.stopped is not None and health.stopped_state is BackendState.ASLEEP:
        return Dormancy.MODEL_STOPPED  # the supervisor stopped it, here
    local = backend.local if backend is not None else None
    if local is not None and local.on_demand:
        return Dormancy.MODEL_STOPPED  # seen through the shared state of another worker or replica
    return Dormancy.HOST_OFF


def _on_demand(backend: BackendConfig) -> dict[str, Any] | None:
    """A local model's on-demand settings, as the fabric file has them (None for one always running:
    `LocalLaunch.on_demand`, the one definition, which a group without `exclusive` does not make)."""
    local = backend.local
    if local is None or not local.on_demand:
        return None
    return {
        "start": local.start,
        "idle_stop": local.idle_stop,
        "group": local.group,
        "exclusive": local.exclusive,
    }


class TargetView(Protocol):
    """A routing target as the health view shows it (`routing.target.TargetState`)."""

    @property
    def name(self) -> str: ...

    def view(self, now: float) -> dict[str, Any]: ...


_OVERALL = {OK: "ok", ATTENTION: "attention", BROKEN: "broken"}


def health_view(
    healths: Mapping[str, BackendHealth],
    config: FabricConfig,
    now: float | None = None,
    *,
    targets: Iterable[TargetView] = (),
) -> dict[str, Any]:
    """Every backend's state, why, probe latency, model ids (configured vs served) and load.

    A running gateway also passes its routing table's `targets`: their passive-ejection state,
    requests in flight and latency average appear under "targets".
    """
    now = time.monotonic() if now is None else now
    backends: dict[str, Any] = {}
    for name, health in healths.items():
        backend = config.backends.get(name)
        entry: dict[str, Any] = {"name": name}
        if backend is not None:
            host = config.hosts.get(backend.host) if backend.host else None
            entry.update(
                host=backend.host,
                always_on=host.always_on if host is not None else True,
                kind=backend.kind,
                url=redact_url(backend.url),
            )
            if backend.unix_socket:  # where its connections really go (backends.base.unix_routes)
                entry["unix_socket"] = backend.unix_socket
            adapter = adapter_for(backend.kind)
            entry["models"] = [
                {"configured": model, "served": adapter.serves(model, health.served_models)}
                if health.served_models
                else {"configured": model, "served": None}
                for model in configured_models(config, name)
            ]
        entry.update(health.snapshot(now))
        if backend is not None and backend.sleep_when_idle is not None:
            entry["engine_asleep"] = health.engine_asleep  # vLLM sleep mode (health.engine_sleep)
        if backend is not None and (on_demand := _on_demand(backend)) is not None:
            entry["on_demand"] = on_demand
        dormant = dormancy(health, backend)
        entry["dormant"] = str(dormant) if dormant is not None else None
        entry["status"] = _OVERALL[backend_status(health)]
        backends[name] = entry
    status = exit_status(healths)
    counts: dict[str, int] = {}
    for health in healths.values():
        counts[str(health.state)] = counts.get(str(health.state), 0) + 1
    mismatched = sum(1 for h in healths.values() if h.mismatches)
    if mismatched:
        counts["mismatched"] = mismatched
    view: dict[str, Any] = {
        "status": _OVERALL[status],
        "exit_code": status,
        "counts": counts,
        "backends": backends,
    }
    target_views = {t.name: t.view(now) for t in targets}
    if target_views:
        view["targets"] = target_views
    # By value: a probe's reason may quote a backend's error, which may quote the key we sent it.
    redacted: dict[str, Any] = redact_values(view, config_secrets(config))
    return redacted


def _latency(entry: Mapping[str, Any]) -> str:
    ms = entry.get("probe_latency_ms")
    return "-" if ms is None else f"{ms:g} ms"


def _models(entry: Mapping[str, Any]) -> str:
    served: list[str] = entry.get("served_models") or []
    configured = {m["configured"]: m["served"] for m in entry.get("models", [])}
    if not served:
        return f"- (config: {', '.join(configured)})" if configured else "-"
    parts = []
    for model in served[:4]:
        parts.append(f"{model} ok" if configured.get(model) else model)
    if len(served) > 4:
        parts.append(f"+{len(served) - 4} more")
    return ", ".join(parts)


def _load(entry: Mapping[str, Any]) -> str:
    load: Mapping[str, float] = entry.get("load") or {}
    shown = []
    for key, value in load.items():
        shown.append(f"{key}={value:.0%}" if key.endswith("usage") else f"{key}={value:g}")
    return " ".join(shown) or "-"


# What the terminal table says under a backend that does not serve on purpose (the page words it alike).
_DORMANT_NOTES: dict[str, str] = {
    Dormancy.HOST_OFF: "(a host with always_on: false: expected when it is powered off)",
    Dormancy.ENGINE_ASLEEP: "(engine in sleep mode while idle (sleep_when_idle): the next request wakes it)",
    Dormancy.MODEL_STOPPED: "(a model on demand, not running: the next request for it starts it)",
}


def render_table(view: Mapping[str, Any]) -> list[str]:
    """Lines for a terminal: one row per backend, then why (when not plainly up) and any drift."""
    header = ("BACKEND", "HOST", "KIND", "STATE", "LATENCY", "MODELS SERVED", "LOAD")
    rows: list[tuple[str, ...]] = [header]
    notes: dict[str, list[str]] = {}
    for name, entry in view["backends"].items():
        rows.append(
            (
                name,
                entry.get("host") or "-",
                entry.get("kind", "?"),
                entry["state"],
                _latency(entry),
                _models(entry),
                _load(entry),
            )
        )
        lines = []
        if entry["state"] != "up" or entry["reason"] != "serving":
            lines.append(f"why: {entry['reason']}")
        dormant = entry.get("dormant")
        if "dormant" not in entry and entry["state"] == "asleep":  # a gateway before `dormant` existed
            dormant = Dormancy.HOST_OFF
        note = _DORMANT_NOTES.get(dormant or "")
        if note:
            lines.append(note)
        lines.extend(f"MISMATCH: {m}" for m in entry["mismatches"])
        notes[name] = lines
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    out = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
        out.extend(f"    {line}" for line in notes.get(row[0], []) if row is not header)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view["counts"].items()))
    out.append("")
    out.append(f"{counts or 'no backends'}: {view['status']} (exit {view['exit_code']})")
    return out
