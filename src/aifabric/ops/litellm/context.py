"""State shared by the parts of one import: the plan being built, and the rules every part follows for
values (`os.environ/NAME` -> `${NAME}`), secrets (a literal goes to the env file, never to the fabric
file) and findings (reported at their line)."""

from __future__ import annotations

import re

from aifabric.ops.litellm.plan import Finding, ImportPlan, LiteralSecret, Setting
from aifabric.ops.litellm.source import Item

__all__ = ["Context", "duration", "seconds"]

_ENV_PREFIX = "os.environ/"
_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")


class Context:
    def __init__(self, source: str) -> None:
        self.plan = ImportPlan(source=source)
        self.health_settings: list[Setting] = []  # for every backend (LiteLLM's are router-wide)
        self.balance: Setting | None = None  # for every role

    # -- findings ------------------------------------------------------------------------------------

    def left_out(self, item: Item | None, key: str, why: str) -> None:
        self.plan.findings.append(Finding(item.line if item else None, key, why, left_out=True))

    def note(self, item: Item | None, key: str, why: str) -> None:
        self.plan.findings.append(Finding(item.line if item else None, key, why, left_out=False))

    def left_out_all(self, item: Item, path: str, why: str) -> None:
        """Every key of a section reported at its own line, with one reason."""
        for key, child in item.mapping().items():
            self.left_out(child, f"{path}.{key}", why)

    # -- values --------------------------------------------------------------------------------------

    def text(self, item: Item) -> str:
        """A value as the fabric file writes it: `os.environ/NAME` becomes `${NAME}` (and is needed from
        the environment); a literal `${` is escaped, so the loader does not read it as a reference."""
        value = item.value
        if isinstance(value, str) and value.startswith(_ENV_PREFIX):
            return self.reference(value[len(_ENV_PREFIX) :], item.line)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        return text.replace("${", "$${")

    def reference(self, name: str, line: int) -> str:
        self.plan.needs.setdefault(name, line)
        return "${" + name + "}"

    def secret(self, item: Item, key: str, derived: str) -> str | None:
        """`${NAME}` for a secret value: its own variable for `os.environ/NAME`; for a literal, a variable
        named after `derived` whose value goes to the env file (one variable per distinct value)."""
        value = item.value
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.startswith(_ENV_PREFIX):
            return self.reference(value[len(_ENV_PREFIX) :], item.line)
        literal = str(value)
        for secret in self.plan.secrets.values():
            if secret.value == literal:
                return "${" + secret.name + "}"
        base = "FABRIC_" + _NOT_NAME.sub("_", derived).strip("_").upper()
        name, n = base, 2
        while name in self.plan.secrets or name in self.plan.needs:
            name, n = f"{base}_{n}", n + 1
        self.plan.secrets[name] = LiteralSecret(name, literal, item.line, key)
        return "${" + name + "}"


def seconds(item: Item) -> float | None:
    """A LiteLLM duration (a number of seconds), or None when it is not a positive number."""
    value = item.value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number > 0 else None


def duration(value: float) -> str:
    """Seconds as a fabric-file duration: `600s`, `0.5s`."""
    return f"{value:g}s"
