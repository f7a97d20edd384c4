"""The fabric file's text, written by hand so that it carries comments (PyYAML drops them) and comes
out the same for the same input: sections in the loader's order, entries in the LiteLLM file's order.

Every scalar is written plain when YAML would read it back as the same string, else as a JSON string
(a valid YAML double-quoted scalar).
"""

from __future__ import annotations

import json
import re

import yaml

from aifabric.ops.litellm.plan import BackendPlan, Finding, ImportPlan, RolePlan, Setting

__all__ = ["render", "scalar"]

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@+:-]*")


def scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and ": " not in text and _reads_back(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _reads_back(text: str) -> bool:
    """YAML reads the plain scalar back as this very string (not a number, a boolean, a date, ...)."""
    try:
        return bool(yaml.safe_load(text) == text)
    except yaml.YAMLError:
        return False


def _literal(text: str) -> str:
    """A name in a value's place, where the loader would read `${...}` as a reference."""
    return text.replace("${", "$${")


def _comment(text: str) -> str:
    return "# " + " ".join(text.split())


def _line(indent: int, key: str, value: object, comment: str = "") -> str:
    text = f"{' ' * indent}{scalar(key)}: {scalar(value)}"
    return f"{text}  {_comment(comment)}" if comment else text


def _settings(indent: int, settings: list[Setting]) -> list[str]:
    return [_line(indent, s.key, s.value, s.comment) for s in settings]


def render(plan: ImportPlan, env_file: str | None) -> str:
    out = [
        f"# The fabric file of aifabric, imported from the LiteLLM config {plan.source}",
        '# by `aifabric config import litellm`. "line N" in a comment is the line of that file a part',
        "# came from. Reference: docs/configuration.md; the move from LiteLLM: docs/migrating.md.",
    ]
    left_out = plan.left_out
    if left_out:
        out.append(
            f"# {len(left_out)} part(s) of it have no equivalent here: listed at the end of this file."
        )
    gateway = list(plan.gateway)
    if env_file is not None:
        gateway.append(
            Setting(
                "env_file", env_file, "KEY=VALUE secrets of the import (literal keys, environment_variables)"
            )
        )
    if gateway:
        out += ["", "gateway:", *_settings(2, gateway)]
    if plan.retry:
        out += ["", "retry:", *_settings(2, plan.retry)]
    if plan.state is not None:
        out += ["", _line(0, "state", plan.state.value, plan.state.comment)]
    if plan.hosts:
        out += ["", "hosts:"]
        for host in plan.hosts.values():
            out.append(f"  {_comment(host.comment + '; always_on: false for a workstation that may be off')}")
            out += [f"  {scalar(host.name)}:", _line(4, "address", host.address), _line(4, "always_on", True)]
    out += ["", "backends:"]
    for backend in plan.backends.values():
        out += _backend(backend)
    out += ["", "roles:"]
    for role in plan.roles.values():
        out += _role(role)
    if plan.aliases:
        out += ["", "aliases:"]
        out += [_line(2, alias, _literal(role), comment) for alias, (role, comment) in plan.aliases.items()]
    if left_out:
        out += ["", f"# Left out of the import ({len(left_out)}), by line of {plan.source}:"]
        out += [f"#   {_finding(f)}" for f in left_out]
    return "\n".join(out) + "\n"


def _backend(backend: BackendPlan) -> list[str]:
    lines = [f"  {_comment(backend.comment)}", f"  {scalar(backend.name)}:"]
    lines += [_line(4, "kind", backend.kind), _line(4, "url", backend.url)]
    if backend.host is not None:
        lines.append(_line(4, "host", backend.host))
    if backend.api_key is not None:
        lines.append(_line(4, "api_key", backend.api_key))
    lines += _settings(4, backend.settings)
    if backend.health:
        lines += ["    health:", *_settings(6, backend.health)]
    return lines


def _role(role: RolePlan) -> list[str]:
    lines = [
        f"  {_comment(role.comment)}",
        f"  {scalar(role.name)}:",
        _line(4, "kind", role.kind),
        "    targets:",
    ]
    for target in role.targets:
        lines.append(f"      - backend: {scalar(target.backend)}  {_comment(target.comment)}")
        lines.append(_line(8, "model", _literal(target.model)))
        if target.weight is not None:
            lines.append(_line(8, "weight", target.weight))
    if role.fallbacks:
        lines.append("    fallbacks:")
        lines += [
            f"      - {scalar(_literal(name))}  {_comment(comment)}" for name, comment in role.fallbacks
        ]
    if role.balance is not None:
        lines.append(_line(4, "balance", role.balance.value, role.balance.comment))
    if role.limits:
        lines += ["    limits:", *_settings(6, role.limits)]
    return lines


def _finding(finding: Finding) -> str:
    where = f"line {finding.line}: " if finding.line else ""
    return f"{where}{finding.key}: {finding.why}"
