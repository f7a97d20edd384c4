"""`aifabric drill [--url URL] [--backend NAME] [--config FILE] [--json] [--timeout S]`: the runbook's drill.

Against a running `aifabric up`: checks the fabric is healthy, stops one local backend, times how long
until the gateway shows it down and which roles still answer, starts it again (always, even when the
drill fails midway), and times the recovery. See aifabric.ops.drill. With `--config FILE --backend NAME`
the backend's `drill: {fail, restore}` commands fail and restore it instead, against any gateway
(`aifabric serve` too): aifabric.ops.drill_remote.

Exit 0 when the failure was detected and the fabric recovered within the timeout; 1 when either did not
happen (the report says which); 2 when the drill could not run (the fabric was not healthy to begin
with, the gateway is not run by `aifabric up`, or there is no local backend to stop).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import add_gateway_arguments
from aifabric.core import exit_codes
from aifabric.errors import CommandError

if TYPE_CHECKING:
    from aifabric.ops.drill import DrillReport, DrillStep

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "drill"
HELP = (
    "Failure drill on a running `aifabric up`: stop one local backend, time detection and recovery "
    "(exit 0 both happened, 1 not, 2 could not run)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gateway_arguments(
        parser,
        timeout=120.0,
        key_help="an admin key (gateway.admin_keys; default: $FABRIC_ADMIN_KEY, else $FABRIC_MASTER_KEY): "
        "it also serves the smoke requests; without keys the gateway takes admin requests from this "
        "machine only",
        admin=True,
    )
    parser.add_argument(
        "--backend",
        metavar="NAME",
        help="the local backend to stop (default: the first one serving a role that has fallbacks, "
        "else the first local backend)",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="the fabric file: with --backend NAME whose `drill: {fail, restore}` commands fail and "
        "restore it, the drill runs against any gateway (`aifabric serve` too), not only `up`",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.epilog = "--timeout bounds detection and recovery each (seconds); each request gets at most 60 s."


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.ops.drill import run_drill

    def show(step: DrillStep) -> None:
        word = "PASS" if step.ok else ("FAIL" if step.counted else "WARN")
        timing = f"  ({step.seconds:.1f} s)" if step.seconds is not None else ""
        console.print(f"  {word}  {step.name:<24} {step.detail}{timing}")

    if not args.json:
        console.print(f"failure drill on {args.url}")
    on_step = None if args.json else show
    if args.config is not None:
        report = asyncio.run(_remote(args, on_step))
    else:
        report = asyncio.run(
            run_drill(
                args.url,
                api_key=args.api_key,
                backend=args.backend,
                timeout=args.timeout,
                request_timeout=min(args.timeout, 60.0),
                on_step=on_step,
            )
        )
    code = exit_codes.OK if report.ok else exit_codes.FAILED
    if report.aborted is not None and not (report.restarted or report.detected):
        code = exit_codes.NOT_RUN  # nothing was stopped: the fabric is as it was
    if args.json:
        console.json({**report.to_dict(), "exit_code": code})
        return code
    for note in report.notes:
        console.print(f"  note: {note}")
    console.print("")
    console.print(_verdict(report, code))
    return code


async def _remote(args: argparse.Namespace, on_step: Callable[[DrillStep], None] | None) -> DrillReport:
    """`--config FILE --backend NAME`: the drill through the backend's own fail/restore commands."""
    from aifabric.config.load import load_config
    from aifabric.ops.drill_remote import run_remote_drill

    config = load_config(args.config)
    if args.backend is None or args.backend not in config.backends:
        known = ", ".join(n for n, b in config.backends.items() if b.drill is not None) or "none"
        raise CommandError(
            f"--config needs --backend NAME, a backend of {config.source} with drill: commands "
            f"(those with drill: {known})",
            exit_codes.USAGE,
        )
    commands = config.backends[args.backend].drill
    if commands is None:
        raise CommandError(
            f"backend {args.backend!r} has no drill: section in {config.source}; add "
            'drill: {fail: "ssh HOST podman stop vllm", restore: "ssh HOST podman start vllm"}',
            exit_codes.USAGE,
        )
    return await run_remote_drill(
        args.url,
        args.backend,
        commands,
        api_key=args.api_key,
        timeout=args.timeout,
        request_timeout=min(args.timeout, 60.0),
        on_step=on_step,
    )


def _verdict(report: DrillReport, code: int) -> str:
    if code == exit_codes.NOT_RUN:
        return f"drill not run: {report.aborted}"
    detection, recovery = report.step("detection"), report.step("recovery")
    if code == exit_codes.OK and detection and recovery:
        text = (
            f"drill PASSED on {report.backend}: down detected in {detection.seconds or 0:.1f} s, "
            f"recovered in {recovery.seconds or 0:.1f} s"
        )
        if report.failed:
            text += (
                f"; while it was down {len(report.failed)} of {len(report.answered) + len(report.failed)} "
                f"roles/aliases failed ({', '.join(report.failed)})"
            )
            stranded = [n for n in report.failed if n in report.expected_failures]
            if stranded:
                text += ": give them a fallback role on another backend to keep them answering"
        return text
    state = "running again" if report.restarted else "NOT started again (see the note above)"
    return f"drill FAILED on {report.backend}: {report.aborted or 'see above'}; the backend is {state}"
