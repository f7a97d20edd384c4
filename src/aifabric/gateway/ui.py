"""The operators' status page: the one JSON it polls (`GET /status`) and its static files (`GET /ui`).

The page replaces the runbook's `check_vllm_backends.sh`, `curl ... | jq` and `podman logs` rounds with
one view: every backend (state and why, probe latency, served ids and drift, load), every role and alias
(targets, ejection, in flight, latency, fallbacks), and a requests summary. `/status` is the health view
of `aifabric health --json` with more keys added, so anything that reads `/health` reads `/status` too.

Like `/health`, both are open when `gateway.api_keys` is set: nothing here is secret. Backend URLs are
shown with any password redacted (`health_view` does it), api keys are never read, only whether the
gateway wants one.

The files are plain HTML/CSS/JS shipped as package data (no build step, nothing fetched from elsewhere),
read once per process and served with a Content-Security-Policy that lets the page talk only to the
gateway that served it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
from typing import TYPE_CHECKING, Any, Protocol

from aifabric.health.report import health_view
from aifabric.http.server import Response
from aifabric.routing.load import load_view
from aifabric.routing.overflow import all_saturated

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aifabric.observability.merged import SummedCounters
    from aifabric.routing.table import RoutingTable

__all__ = ["UI_PATHS", "status_view", "ui_response"]

# path -> (file in gateway/static, content type). `/` serves the page itself: an operator who opens
# the gateway's address in a browser lands on it. The page names its files and the JSON it polls by
# relative URL (`ui/app.js`, `status`), which resolve alike from `/` and `/ui`, and under a path prefix
# a reverse proxy may add; `/ui/` would not, so it redirects to `../ui`.
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
}
_REDIRECTS = {"/ui/": "../ui"}
UI_PATHS = frozenset(_ASSETS) | frozenset(_REDIRECTS)

# The page loads its own script and style and fetches from its own origin; nothing else, ever.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    ("content-security-policy", _CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),  # an upgraded gateway serves its new page at once
]


@functools.cache
def _asset(filename: str) -> bytes:
    return importlib.resources.files("aifabric.gateway").joinpath("static", filename).read_bytes()


def ui_response(path: str) -> Response:
    """The page or one of its files; `path` must be one of `UI_PATHS`."""
    if path in _REDIRECTS:
        return Response(302, b"", headers=[("location", _REDIRECTS[path])], content_type="")
    filename, content_type = _ASSETS[path]
    return Response(200, _asset(filename), headers=list(_HEADERS), content_type=content_type)


class Counters(Protocol):
    """What the view reads of the request counters: one process's (`GatewayMetrics`), or every
    worker's summed (`observability.merged.SummedCounters`)."""

    @property
    def requests(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def overflowed(self) -> Mapping[str, int]: ...


def status_view(
    table: RoutingTable,
    metrics: Counters | None,
    now: float,
    summed: SummedCounters | None = None,
) -> dict[str, Any]:
    """Everything the status page shows, from one routing table snapshot.

    `summed`: under `serve --workers N`, every worker's counters added up; then the request counters,
    `overflowed` and the targets' `successes`/`failures` are those sums, and `requests.workers` says how
    many processes they are from (1 when `summed` is None: this process's own).

    The keys of `health_view` (status, exit_code, counts, backends, targets) plus:
      gateway   the fabric file it serves, whether clients need a key, workers, this process's pid
      roles     per role: kind, description, balance, aliases, fallbacks, and its targets as
                `target_view` entries with their weight and load estimate; overflow (its bounds),
                saturated (they hold now), overflowed (requests sent to the fallbacks)
      aliases   alias -> role
      requests  counters: total, errors (status >= 400), by role and by status; workers (counted in)
    """
    if summed is not None:
        metrics = summed
    config = table.config
    targets = [t for route in table.routes.values() for t in route.targets]
    view = health_view(table.healths, config, now, targets=targets)
    source = config.source
    view["gateway"] = {
        "source": source,
        "name": os.path.basename(source) if not source.startswith("<") else source,
        "auth_required": bool(config.gateway.api_keys),
        "workers": config.gateway.workers,
        "pid": os.getpid(),
    }
    aliases_of: dict[str, list[str]] = {}
    for alias, role in config.aliases.items():
        aliases_of.setdefault(role, []).append(alias)
    roles: dict[str, Any] = {}
    for route in table.routes.values():
        shown = [{**t.view(now), "weight": t.weight, "load": load_view(t)} for t in route.targets]
        if summed is not None:
            for t in shown:
                _sum_results(t, summed)
        overflow = route.config.overflow
        roles[route.name] = {
            "name": route.name,
            "kind": route.kind,
            "description": route.config.description,
            "balance": route.balance,
            "affinity": route.config.affinity,
            "aliases": aliases_of.get(route.name, []),
            "fallbacks": list(route.fallbacks),
            "targets": shown,
            "available_targets": sum(1 for t in shown if t["available"]),
            # overflow: the bounds (null without overflow:), whether they hold now, requests sent on
            "overflow": None if overflow is None else dataclasses.asdict(overflow),
            "saturated": overflow is not None and all_saturated(route.targets, now, overflow),
            "overflowed": metrics.overflowed.get(route.name, 0) if metrics is not None else 0,
        }
    view["roles"] = roles
    view["aliases"] = dict(config.aliases)
    if summed is not None:
        for t in view.get("targets", {}).values():
            _sum_results(t, summed)
    view["requests"] = {**_requests(metrics), "workers": summed.workers if summed is not None else 1}
    return view


def _sum_results(target: dict[str, Any], summed: SummedCounters) -> None:
    """A target's `successes` and `failures` as every worker counted them (the view has this one's)."""
    key = (target["role"], target["backend"], target["model"])
    target["successes"] = summed.results.get((*key, "success"), target["successes"])
    target["failures"] = summed.results.get((*key, "failure"), target["failures"])


def _requests(metrics: Counters | None) -> dict[str, Any]:
    """API requests answered (by this process, or every worker: `status_view`), from the same counters
    `/metrics` exports."""
    total = errors = 0
    by_role: dict[str, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    counters = dict(metrics.requests) if metrics is not None else {}
    for (role, status), count in sorted(counters.items()):
        failed = not status.isdigit() or int(status) >= 400
        total += count
        errors += count if failed else 0
        # A request whose `model` named no role (a 404, a malformed body) has no role label.
        entry = by_role.setdefault(role or "(no role)", {"total": 0, "errors": 0})
        entry["total"] += count
        entry["errors"] += count if failed else 0
        by_status[status] = by_status.get(status, 0) + count
    return {"total": total, "errors": errors, "by_role": by_role, "by_status": by_status}
