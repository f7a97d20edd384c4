"""`/metrics` of `aifabric serve --workers N`: every worker's counters, summed, whoever answers.

The kernel hands each scrape to one worker; without this each would show its own counts, and
Prometheus would see the counters jump between the workers' values (resets, wrong rates). Like
prometheus_client's multiprocess mode under gunicorn, each worker writes its exposition to the
workers' state directory, off the request path (every second, and when it answers a scrape), and the
one answering sums the counters and histograms of all of them; gauges (health, queues) are its own
view, which the workers share through the state already.

    <state dir>/metrics-<worker index>.prom     one per worker, replaced atomically

A worker's file is named by its index (0..N-1), not its pid: a worker that is replaced reads its
predecessor's file when it starts and counts on from there, so the sums never go backwards while the
gateway runs (`aifabric serve` removes the files when it starts: a new gateway starts from zero).

`GET /status` reads the same files (`SharedMetrics.expositions`, then `SummedCounters`): its request
counts, overflows, the targets' successes and failures, and the usage per key and the ledger's row
counts are the whole gateway's, whichever worker answers.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SharedMetrics", "SummedCounters", "counter_samples", "merge_expositions", "samples"]

_SUMMED = frozenset({"counter", "histogram"})
_SUFFIXES = ("_bucket", "_sum", "_count")


def _family(name: str, types: dict[str, str]) -> str:
    if name in types:
        return name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def _samples(text: str) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """The families' types, and the summed families' samples (series -> value) by family."""
    types: dict[str, str] = {}
    samples: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        family = _family(series.partition("{")[0], types)
        if types.get(family) in _SUMMED:
            with contextlib.suppress(ValueError):
                by = samples.setdefault(family, {})
                by[series] = by.get(series, 0.0) + float(value)
    return types, samples


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def merge_expositions(own: str, others: list[str]) -> str:
    """`own` (Prometheus text) with every counter and histogram sample of `others` added to the same
    series, and the series only the others have added to their family; gauges are `own`'s."""
    types: dict[str, str] = {}
    extra: dict[str, dict[str, float]] = {}
    for text in others:
        their_types, their_samples = _samples(text)
        types.update(their_types)
        for family, by in their_samples.items():
            into = extra.setdefault(family, {})
            for series, count in by.items():
                into[series] = into.get(series, 0.0) + count
    out: list[str] = []
    own_types: dict[str, str] = {}
    current = ""

    def flush(family: str) -> None:
        for series, value in extra.pop(family, {}).items():
            out.append(f"{series} {_number(value)}")

    for line in own.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            own_types[name] = kind
        if line.startswith("# "):
            name = line.split(" ", 3)[2] if line.count(" ") >= 2 else ""
            if name != current:
                flush(current)
                current = name
            out.append(line)
            continue
        if not line:
            continue
        series, _, value = line.rpartition(" ")
        family = _family(series.partition("{")[0], own_types)
        added = extra.get(family, {}).pop(series, None)
        summed = line
        if added is not None and own_types.get(family) in _SUMMED:
            with contextlib.suppress(ValueError):
                summed = f"{series} {_number(float(value) + added)}"
        out.append(summed)
    flush(current)
    for family in list(extra):  # families this worker has no sample of yet
        if extra[family]:
            out.append(f"# TYPE {family} {types.get(family, 'counter')}")
            flush(family)
    return "\n".join(out) + "\n"


class SharedMetrics:
    """One worker's side: its file, what its predecessor counted, and the others' files."""

    def __init__(self, directory: Path, index: int) -> None:
        self.directory = directory
        self.path = directory / f"metrics-{index}.prom"
        try:  # a worker that replaces one that died counts on from its counts
            self.carried = self.path.read_text()
        except OSError:
            self.carried = ""

    def publish(self, own: str) -> str:
        """Write this worker's counts (`own`, plus its predecessor's); what it wrote."""
        text = merge_expositions(own, [self.carried]) if self.carried else own
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".metrics-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)
        return text

    def merged(self, own: str) -> str:
        """The exposition a scrape gets: `own` published first (so a later scrape answered by another
        worker sees at least these counts), then every other worker's file added."""
        mine, *others = self.expositions(own)
        return merge_expositions(mine, others)

    def expositions(self, own: str) -> list[str]:
        """Every worker's counts, this one's first: `own` as published (with its predecessor's), then
        each other worker's file. What `merged` sums, and `SummedCounters.from_expositions` reads."""
        mine = self.publish(own)
        others = []
        for path in sorted(self.directory.glob("metrics-*.prom")):
            if path != self.path:
                with contextlib.suppress(OSError):
                    others.append(path.read_text())
        return [mine, *others]


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def samples(text: str, family: str) -> dict[tuple[str, ...], float]:
    """The samples of one family of an exposition: its label values, in the order the exposition
    writes them, -> the value (summed, should a series appear twice)."""
    out: dict[tuple[str, ...], float] = {}
    prefix = family + "{"
    for line in text.splitlines():
        if not (line.startswith(prefix) or line.startswith(family + " ")):
            continue
        series, _, value = line.rpartition(" ")
        values = tuple(
            re.sub(r"\\.", lambda m: _UNESCAPE.get(m.group(0), m.group(0)), v)
            for _, v in _LABEL.findall(series.partition("{")[2])
        )
        with contextlib.suppress(ValueError):
            out[values] = out.get(values, 0.0) + float(value)
    return out


def counter_samples(text: str, family: str) -> dict[tuple[str, ...], int]:
    """`samples` of a counter of whole numbers, as ints (the shape `GatewayMetrics` keeps its
    counters in)."""
    return {values: round(value) for values, value in samples(text, family).items()}


@dataclass(slots=True)
class SummedCounters:
    """The counters `/status` shows, summed over the workers of `serve --workers N` (from `merged`):
    the same shapes as `GatewayMetrics`' and the targets' own, so the view reads either alike.

    `exposition` is the summed text itself and `each` every worker's own (this one's first), for the
    views of the layers above that read their own families from them (tenancy.usage_view)."""

    workers: int
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, status)
    overflowed: dict[str, int] = field(default_factory=dict)  # role
    # (role, backend, model, "success" | "failure"): the targets' own counts, aifabric_target_results_total
    results: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    exposition: str = ""
    each: tuple[str, ...] = ()

    @classmethod
    def from_expositions(cls, texts: list[str]) -> SummedCounters:
        """From every worker's exposition, the answering worker's first (`SharedMetrics.expositions`)."""
        summed = cls.from_exposition(merge_expositions(texts[0], texts[1:]), len(texts))
        summed.each = tuple(texts)
        return summed

    def gauge_total(self, family: str) -> float:
        """A gauge without labels added up over the workers (each worker's own value: the summed
        exposition holds the answering worker's only), e.g. the rows each one has queued."""
        return sum(samples(text, family).get((), 0.0) for text in self.each)

    @classmethod
    def from_exposition(cls, text: str, workers: int) -> SummedCounters:
        requests = {
            (k[0], k[1]): n
            for k, n in counter_samples(text, "aifabric_requests_total").items()
            if len(k) == 2
        }
        overflowed = {
            k[0]: n for k, n in counter_samples(text, "aifabric_overflow_total").items() if len(k) == 1
        }
        results = {
            (k[0], k[1], k[2], k[3]): n
            for k, n in counter_samples(text, "aifabric_target_results_total").items()
            if len(k) == 4
        }
        return cls(workers, requests, overflowed, results, text)


def clear(directory: Path) -> None:
    """Remove the workers' files of an earlier gateway on this port (at `aifabric serve`'s start)."""
    for path in directory.glob("metrics-*.prom"):
        with contextlib.suppress(OSError):
            path.unlink()
