"""What an import produces before it is written: the parts of the fabric file, each with where it came
from, the secrets bound for the env file, and the findings (what was changed, what was left out)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BackendPlan",
    "Finding",
    "HostPlan",
    "ImportPlan",
    "LiteralSecret",
    "RolePlan",
    "Setting",
    "TargetPlan",
]

Value = str | int | float | bool | list[str]


@dataclass(frozen=True)
class Finding:
    """One part of the LiteLLM file the result does not carry as it was, at its line."""

    line: int | None
    key: str  # where in the LiteLLM file: `litellm_settings.cache`, `model_list[3].litellm_params.rpm`
    why: str
    left_out: bool = True  # False: carried, with a change worth knowing (a note)

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "key": self.key, "why": self.why}


@dataclass(frozen=True)
class Setting:
    key: str
    value: Value
    comment: str  # where it came from


@dataclass
class HostPlan:
    name: str
    address: str
    comment: str


@dataclass
class BackendPlan:
    name: str
    kind: str
    url: str
    api_key: str | None  # `${NAME}`: never a literal
    host: str | None
    comment: str
    settings: list[Setting] = field(default_factory=list)  # timeout
    health: list[Setting] = field(default_factory=list)


@dataclass
class TargetPlan:
    backend: str
    model: str
    weight: float | None
    comment: str


@dataclass
class RolePlan:
    name: str
    kind: str
    targets: list[TargetPlan]
    comment: str
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # (role, where it came from)
    balance: Setting | None = None
    limits: list[Setting] = field(default_factory=list)  # rpm / tpm


@dataclass(frozen=True)
class LiteralSecret:
    """A literal secret of the LiteLLM file, bound for the env file under `name`."""

    name: str
    value: str
    line: int
    key: str


@dataclass
class ImportPlan:
    source: str
    gateway: list[Setting] = field(default_factory=list)
    retry: list[Setting] = field(default_factory=list)
    state: Setting | None = None
    hosts: dict[str, HostPlan] = field(default_factory=dict)
    backends: dict[str, BackendPlan] = field(default_factory=dict)
    roles: dict[str, RolePlan] = field(default_factory=dict)
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # alias -> (role, comment)
    secrets: dict[str, LiteralSecret] = field(default_factory=dict)  # env var -> literal secret
    env_vars: dict[str, tuple[str, int]] = field(default_factory=dict)  # environment_variables, line
    needs: dict[str, int] = field(default_factory=dict)  # variables read from the environment -> line
    findings: list[Finding] = field(default_factory=list)

    @property
    def left_out(self) -> list[Finding]:
        return [f for f in self.findings if f.left_out]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if not f.left_out]

    @property
    def complete(self) -> bool:
        return not self.left_out
