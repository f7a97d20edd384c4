"""The fuzz tests count the cases they generate; the count is printed at the end of the run."""

from __future__ import annotations

from collections import Counter

import pytest

CASES: Counter[str] = Counter()


@pytest.fixture
def count_case() -> Counter[str]:
    return CASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz: {sum(CASES.values())} generated cases ({parts})")
