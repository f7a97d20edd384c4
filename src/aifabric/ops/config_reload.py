"""`aifabric config reload`: ask a running gateway to re-read its fabric file (`POST
/admin/config/reload`), and say what it applied or why it refused.

    answer = request_reload("http://127.0.0.1:8000", api_key=None, timeout=10)
    answer.applied, answer.body        # the gateway's own report: diff, problems, version
    answer.processes                   # what every worker and replica sharing its state did
    answer.exit_code                   # 0 applied everywhere; 1 refused or not allowed, or another
                                       # worker/replica refused, runs other files or did not answer
                                       # within `timeout`; 3 unreachable

The gateway waits (`?wait=`) up to `timeout` seconds for every live worker and replica to answer; the
HTTP request itself may take that long plus a margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aifabric.config.diff import Change, ConfigDiff
from aifabric.core import exit_codes
from aifabric.ops.admin_call import post_admin

__all__ = ["ReloadAnswer", "render_reload", "request_reload"]

_MARGIN = 10.0  # seconds the HTTP request may take beyond the gateway's wait (its own reload, the network)


@dataclass
class ReloadAnswer:
    url: str
    status: int | None = None  # HTTP status, None when the gateway did not answer
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # unreachable, or an answer that is not the reload route's

    @property
    def applied(self) -> bool:
        return self.status == 200 and bool(self.body.get("applied"))

    @property
    def processes(self) -> list[dict[str, Any]]:
        found = self.body.get("processes")
        return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []

    @property
    def laggards(self) -> list[dict[str, Any]]:
        """The workers and replicas that refused, did not answer, or applied files other than these."""
        return [p for p in self.processes if p.get("state") != "applied" or not p.get("same_files")]

    @property
    def exit_code(self) -> int:
        if self.status is None:
            return exit_codes.UNREACHABLE
        return exit_codes.OK if self.applied and not self.laggards else exit_codes.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "error": self.error, **self.body}


def request_reload(url: str, *, api_key: str | None = None, timeout: float = 10.0) -> ReloadAnswer:
    """POST /admin/config/reload (through `post_admin`, the one admin-route client), waiting up to
    `timeout` for every worker and replica to answer."""
    path = f"/admin/config/reload?wait={timeout:g}"
    call = post_admin(url, path, api_key=api_key, timeout=timeout + _MARGIN)
    answer = ReloadAnswer(call.url, call.status, call.body, call.error)
    if call.status == 404 and answer.error is not None:
        answer.error += " (a gateway older than `config reload`: send it SIGHUP instead)"
    return answer


def render_reload(answer: ReloadAnswer) -> list[str]:
    """Lines for people: what was applied (the diff) or every problem that made the gateway refuse."""
    body = answer.body
    if answer.applied:
        lines = [str(body.get("message", "reloaded"))]
        diff = _diff(body.get("diff"))
        lines += [f"  {line}" for line in diff.lines()]
        if diff.secrets_changed:
            lines.append(f"  secrets changed: {', '.join(diff.secrets_changed)}")
        shared = body.get("shared_through")
        lines.append(
            f"announced through {shared}: every worker and replica sharing it reloads its own file"
            if shared
            else "this gateway shares no state: other replicas (if any) need their own reload"
        )
        lines += [_process_line(p) for p in answer.processes]
        for process in answer.processes:
            for problem in process.get("problems") or []:
                if isinstance(problem, dict):
                    lines += _problem_lines(problem, "    ")
        laggards = answer.laggards
        if laggards:
            lines.append(
                f"{len(laggards)} of {len(answer.processes)} gateways did not apply this reload: "
                "see above (their own logs say more)"
            )
        return lines
    reload = body.get("reload") if isinstance(body.get("reload"), dict) else None
    if reload is None:
        return [f"{answer.url}: {answer.error or 'no answer'}"]
    lines = [str(reload.get("message", "")).split("\n", 1)[0]]
    for problem in reload.get("problems") or []:
        lines += _problem_lines(problem, "  ")
    if not reload.get("problems"):
        lines = [str(reload.get("message", ""))]
    return lines


def _problem_lines(problem: dict[str, Any], indent: str) -> list[str]:
    where = f"{problem.get('file')}:{problem.get('line')}" if problem.get("line") else problem.get("file")
    lines = [f"{indent}{where}: {problem.get('message')}"]
    if problem.get("fix"):
        lines.append(f"{indent}  fix: {problem.get('fix')}")
    return lines


def _process_line(process: dict[str, Any]) -> str:
    """One worker or replica: `  ok   host/pid/id: applied (version v)`."""
    holder, state, version = process.get("holder"), process.get("state"), process.get("version")
    if state == "no_answer":
        return f"  FAIL {holder}: did not answer in time (down, or its state sync is stalled: see its log)"
    if state == "refused":
        first = str(process.get("message", "")).split("\n", 1)[0]
        return f"  FAIL {holder}: refused, still runs version {version}: {first}"
    if not process.get("same_files"):
        return (
            f"  FAIL {holder}: applied version {version}, other files than this gateway's: "
            "copy the same fabric file and env file to every replica"
        )
    return f"  ok   {holder}: applied (version {version})"


def _diff(data: Any) -> ConfigDiff:
    if not isinstance(data, dict):
        return ConfigDiff()
    changes = tuple(
        Change(str(c["section"]), str(c["name"]), c["kind"], tuple(c.get("fields", ())))
        for c in data.get("changes", [])
        if isinstance(c, dict) and c.get("kind") in ("added", "removed", "changed")
    )
    return ConfigDiff(changes, tuple(data.get("secrets_changed", ())))
