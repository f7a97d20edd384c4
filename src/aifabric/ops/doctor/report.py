"""The doctor's findings: one `Check` per thing looked at, with its verdict and the fix in words."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from aifabric.core import exit_codes

__all__ = ["Check", "DoctorReport", "Verdict"]


class Verdict(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # works, but is a risk or will surprise someone later
    FAIL = "FAIL"  # the gateway will not start, or will not serve what the file promises
    SKIP = "SKIP"  # could not run (an earlier check failed) or was not asked for


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    summary: str
    fix: str = ""
    details: tuple[str, ...] = ()


@dataclass
class DoctorReport:
    source: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.verdict is Verdict.FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return exit_codes.OK if self.ok else exit_codes.FAILED

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.checks:
            out[c.verdict.value] = out.get(c.verdict.value, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [{**asdict(c), "details": list(c.details)} for c in self.checks],
        }
