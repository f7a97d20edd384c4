"""`aifabric doctor [--config FILE] [--json] [--probe]`: pre-flight for "the gateway won't start".

Every check with PASS/WARN/FAIL and the fix in words (see aifabric.ops.doctor). Exit 0 when nothing
FAILs, 1 otherwise. Sends nothing to the backends' hosts (DNS lookups only) unless --probe.
"""

from __future__ import annotations

import argparse

from aifabric.cli.console import Console

__all__ = ["HELP", "NAME", "add_arguments", "render", "run"]

NAME = "doctor"
HELP = "Pre-flight checks of a fabric file before starting the gateway, each with its fix (exit 0/1)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also probe every backend as `aifabric health` does (without it only DNS lookups are made)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per-probe timeout with --probe (default: the file's)",
    )


def render(report_dict: dict[str, object]) -> list[str]:
    """The report as lines for a terminal (from `DoctorReport.to_dict()`)."""
    out = [f"aifabric doctor: {report_dict['source']}"]
    checks = report_dict["checks"]
    assert isinstance(checks, list)
    width = max((len(c["name"]) for c in checks), default=0)
    for c in checks:
        out.append(f"  {c['verdict']:<4}  {c['name']:<{width}}  {c['summary']}")
        pad = " " * (10 + width)
        out.extend(f"{pad}{line}" for d in c["details"] for line in str(d).splitlines())
        if c["fix"] and c["verdict"] != "PASS":
            out.append(f"{pad}fix: {c['fix']}")
    counts = report_dict["counts"]
    assert isinstance(counts, dict)
    tally = ", ".join(f"{counts[v]} {v}" for v in ("FAIL", "WARN", "PASS", "SKIP") if counts.get(v))
    verdict = "ready to start" if report_dict["ok"] else "not ready: fix each FAIL first"
    out.append("")
    out.append(f"{tally}: {verdict} (exit {report_dict['exit_code']})")
    return out


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.ops.doctor import diagnose

    report = diagnose(args.config, probe=args.probe, probe_timeout=args.timeout)
    data = report.to_dict()
    if args.json:
        console.json(data)
    else:
        for line in render(data):
            console.print(line)
    return report.exit_code
