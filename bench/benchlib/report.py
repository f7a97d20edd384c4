"""Numbers into text: spreads over rounds, ratios, and Markdown tables."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """A figure over rounds: the mean and the range, so the reader sees how steady it was."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread | None:
        vals = [v for v in values if v is not None]
        if not vals:
            return None
        return cls(statistics.fmean(vals), min(vals), max(vals), len(vals))

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def fmt_num(value: float, digits: int = 3) -> str:
    """Readable figures: 152,600 / 4,130 / 59 / 0.15 / 0.012."""
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a == 0:
        return "0"
    return f"{value:.{digits}f}"


def fmt_spread(s: Spread | None, scale: float = 1.0, suffix: str = "") -> str:
    """`mean (low-high)` when the rounds differ by more than 1%, else just the mean."""
    if s is None:
        return "-"
    mean, low, high = s.mean * scale, s.low * scale, s.high * scale
    text = fmt_num(mean) + suffix
    if s.n > 1 and high - low > 0.01 * abs(mean):
        text += f" ({fmt_num(low)}..{fmt_num(high)})"
    return text


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "-"
    r = num / den
    if r >= 10:
        return f"{r:,.0f}x"
    if r >= 1:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; the first column left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
