"""What changes between two configurations: by section and by name, secrets as "changed", never values.

    diff = diff_configs(old, new)
    diff.changes          # Change("roles", "chat-fast", "changed", ("targets: [a/m] -> [a/m, b/m]",))
    diff.secrets_changed  # ["backends.openai.api_key"]: which secrets differ, never how
    diff.lines()          # for people: `~ roles.chat-fast: targets: ...`

Named sections (hosts, backends, roles, aliases) are compared entry by entry: added, removed, changed
with the fields that differ. Every other section (gateway, retry, monitoring, state, ...: the limits and
settings) field by field. `aifabric config diff` prints it; a reload answers with the diff it applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aifabric.config.schema import FabricConfig
from aifabric.config.show import REDACTED, config_to_dict

__all__ = ["Change", "ConfigDiff", "diff_configs"]

NAMED_SECTIONS = ("hosts", "backends", "roles", "aliases")
ChangeKind = Literal["added", "removed", "changed"]
_MARK = {"added": "+", "removed": "-", "changed": "~"}


@dataclass(frozen=True)
class Change:
    section: str  # "roles", "gateway", ...
    name: str  # the entry's name in a named section; "" for a setting of another section
    kind: ChangeKind
    fields: tuple[str, ...] = ()  # "url: http://a -> http://b", "api_key: changed (secret)"

    def line(self) -> str:
        where = f"{self.section}.{self.name}" if self.name else self.section
        return f"{_MARK[self.kind]} {where}" + (f": {'; '.join(self.fields)}" if self.fields else "")


@dataclass(frozen=True)
class ConfigDiff:
    changes: tuple[Change, ...] = ()
    secrets_changed: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        return [c.line() for c in self.changes]

    def summary(self) -> str:
        if not self.changes:
            return "no changes"
        counts = {k: sum(1 for c in self.changes if c.kind == k) for k in ("added", "removed", "changed")}
        return ", ".join(f"{n} {k}" for k, n in counts.items() if n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [
                {"section": c.section, "name": c.name, "kind": c.kind, "fields": list(c.fields)}
                for c in self.changes
            ],
            "secrets_changed": list(self.secrets_changed),
            "summary": self.summary(),
        }


def diff_configs(old: FabricConfig, new: FabricConfig) -> ConfigDiff:
    raw_old, raw_new = config_to_dict(old, redact=False), config_to_dict(new, redact=False)
    shown_old, shown_new = config_to_dict(old), config_to_dict(new)
    changes: list[Change] = []
    secrets: list[str] = []
    for section in dict.fromkeys([*raw_old, *raw_new]):
        a, b = raw_old.get(section), raw_new.get(section)
        if a == b:
            continue
        sa, sb = shown_old.get(section), shown_new.get(section)
        if section in NAMED_SECTIONS and isinstance(a, dict) and isinstance(b, dict):
            assert isinstance(sa, dict) and isinstance(sb, dict)
            for name in dict.fromkeys([*a, *b]):
                if name not in b:
                    changes.append(Change(section, name, "removed"))
                elif name not in a:
                    changes.append(Change(section, name, "added", (_brief(section, sb[name]),)))
                elif a[name] != b[name]:
                    path = f"{section}.{name}"
                    fields = _fields(a[name], b[name], sa[name], sb[name], path, secrets)
                    changes.append(Change(section, name, "changed", tuple(fields)))
        else:
            fields = _fields(a, b, sa, sb, section, secrets)
            changes.append(Change(section, "", "changed", tuple(fields)))
    return ConfigDiff(tuple(changes), tuple(secrets))


def _fields(a: Any, b: Any, sa: Any, sb: Any, path: str, secrets: list[str]) -> list[str]:
    """`key: old -> new` for every leaf that differs under `path`; secrets say "changed" only."""
    return [f"{key}: {text}" if key else text for key, text in _leaves(a, b, sa, sb, path, "", secrets)]


def _leaves(
    a: Any, b: Any, sa: Any, sb: Any, path: str, key: str, secrets: list[str]
) -> list[tuple[str, str]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, str]] = []
        for sub in dict.fromkeys([*a, *b]):
            if a.get(sub) != b.get(sub):
                child = f"{key}.{sub}" if key else str(sub)
                out += _leaves(
                    a.get(sub),
                    b.get(sub),
                    (sa or {}).get(sub),
                    (sb or {}).get(sub),
                    f"{path}.{sub}",
                    child,
                    secrets,
                )
        return out
    if _holds_secret(sa) or _holds_secret(sb):
        secrets.append(path)
        return [(key, "changed (secret)")]
    return [(key, f"{_compact(sa)} -> {_compact(sb)}")]


def _holds_secret(shown: Any) -> bool:
    if isinstance(shown, str):
        return REDACTED in shown
    if isinstance(shown, list | tuple):
        return any(_holds_secret(v) for v in shown)
    if isinstance(shown, dict):
        return any(_holds_secret(v) for v in shown.values())
    return False


def _compact(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list) and value and all(isinstance(v, dict) and "backend" in v for v in value):
        return "[" + ", ".join(_target(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def _target(target: dict[str, Any]) -> str:
    extra = "" if target.get("weight", 1.0) == 1.0 else f" (weight {target['weight']:g})"
    return f"{target['backend']}/{target['model']}{extra}"


def _brief(section: str, entry: Any) -> str:
    """What an added entry is, in a few words (secrets redacted)."""
    if section == "aliases":
        return f"-> {entry}"
    if not isinstance(entry, dict):
        return _compact(entry)
    if section == "roles":
        return f"{entry.get('kind')} role, targets {_compact(entry.get('targets'))}"
    if section == "backends":
        return f"{entry.get('kind')} at {entry.get('url')}"
    if section == "hosts":
        return f"{entry.get('address')}" + ("" if entry.get("always_on", True) else " (not always on)")
    return _compact(entry)
