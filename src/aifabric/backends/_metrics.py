"""Just enough of the Prometheus text format to read a backend's own load signals."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["parse_samples"]


def parse_samples(text: str, names: Iterable[str]) -> dict[str, list[float]]:
    """Every sample value of the wanted metric names, one entry per label set.

    `vllm:num_requests_waiting{model_name="m",engine="0"} 3.0` -> {"vllm:num_requests_waiting": [3.0]}.
    Malformed lines are skipped: a load signal is a hint, never a reason to fail a probe.
    """
    wanted = set(names)
    found: dict[str, list[float]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            close = line.rfind("}")
            if close < brace:
                continue
            rest = line[close + 1 :].split()
        else:
            name, _, tail = line.partition(" ")
            rest = tail.split()
        if name not in wanted or not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        found.setdefault(name, []).append(value)
    return found
