"""One measured load run against a target: wrk's figures plus the target's CPU over the run."""

from __future__ import annotations

from dataclasses import dataclass

from benchlib import procstat
from benchlib.process import TargetProcess
from benchlib.wrk import WrkResult, run_wrk


@dataclass(frozen=True)
class LoadRun:
    workload: str
    concurrency: int
    wrk: WrkResult
    cpu_s: float | None  # CPU seconds of the target's process tree during the run (None for direct)
    foreign_share: float = 0.0  # share of all CPUs used by processes not ours during the run

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or self.wrk.requests == 0:
            return None
        return self.cpu_s * 1e6 / self.wrk.requests

    def to_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "concurrency": self.concurrency,
            "cpu_s": self.cpu_s,
            "cpu_us_per_request": self.cpu_us_per_request,
            "foreign_share": self.foreign_share,
            **self.wrk.to_dict(),
        }


def load_run(
    workload: str,
    url: str,
    body: str,
    concurrency: int,
    duration_s: float,
    target: TargetProcess | None,
    headers: dict[str, str] | None = None,
) -> LoadRun:
    """wrk against url; when `target` is given, its process tree's CPU time is read around the run."""
    foreign = procstat.ForeignLoad()
    before = target.sample() if target is not None else []
    result = run_wrk(url, body, concurrency, duration_s, headers)
    share = foreign.share()
    cpu: float | None = None
    if target is not None:
        after = target.sample()
        cpu = procstat.cpu_delta_seconds(before, after)
    return LoadRun(workload, concurrency, result, cpu, share)
