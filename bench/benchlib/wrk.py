"""Throughput and latency with wrk: a Lua script per workload, and a JSON line out of wrk's done().

wrk's own text summary rounds latencies to two digits and hides error counts in optional lines,
so the script prints one machine-readable line from `done()` with exact microseconds instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "WRKJSON "

# Lua long brackets carry the JSON body verbatim (no escaping); the level is chosen so a body
# containing "]]" cannot end the string early.
_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "{marker}{{\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,"
    .. "\\"connect_errors\\":%d,\\"read_errors\\":%d,\\"write_errors\\":%d,"
    .. "\\"status_errors\\":%d,\\"timeouts\\":%d,"
    .. "\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d,\\"mean_us\\":%.1f,\\"max_us\\":%d}}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in microseconds; `errors` counts every failed or non-2xx response."""

    requests: int
    duration_s: float
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    errors: int
    status_errors: int

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def lua_script(body: str, headers: dict[str, str]) -> str:
    """The wrk script that POSTs `body` with `headers` and reports through MARKER."""
    if "]==]" in body:
        raise ValueError("body contains the Lua long-bracket terminator ]==]")
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return _SCRIPT.format(body=body, headers="\n".join(lines), marker=MARKER)


def parse_output(stdout: str) -> WrkResult:
    """The WrkResult in wrk's stdout (raises ValueError when the done() line is missing)."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            break
    else:
        raise ValueError(f"no {MARKER.strip()} line in wrk output:\n{stdout[-2000:]}")
    duration_s = raw["duration_us"] / 1e6
    errors = (
        raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["status_errors"]
        + raw["timeouts"]
    )
    requests = int(raw["requests"])
    return WrkResult(
        requests=requests,
        duration_s=duration_s,
        rps=requests / duration_s if duration_s > 0 else 0.0,
        p50_us=float(raw["p50_us"]),
        p90_us=float(raw["p90_us"]),
        p99_us=float(raw["p99_us"]),
        mean_us=float(raw["mean_us"]),
        max_us=float(raw["max_us"]),
        errors=int(errors),
        status_errors=int(raw["status_errors"]),
    )


def wrk_command(url: str, script: Path, connections: int, duration_s: float) -> list[str]:
    # wrk refuses more threads than connections; two threads are all two cores can feed.
    threads = max(1, min(2, connections))
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]


def run_wrk(
    url: str, body: str, connections: int, duration_s: float, headers: dict[str, str] | None = None
) -> WrkResult:
    """POST `body` to `url` over `connections` keep-alive connections for `duration_s` seconds."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    with tempfile.TemporaryDirectory(prefix="aifabric-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, all_headers))
        proc = subprocess.run(
            wrk_command(url, script, connections, duration_s),
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse_output(proc.stdout)
