"""`python -m aifabric.testing.fake_backend`: the fake backend as a process.

Every switch is a flag (`fail_first_n` -> `--fail-first-n`), generated from the Switches fields so the
CLI cannot fall behind them. Prints `ready http://HOST:PORT` once listening; exits 0 on SIGTERM/SIGINT.
`fake_backend` runs `main` with its `FakeBackend` class: this module does not import `fake_backend`,
which imports it (no import cycle).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aifabric.testing._fake_switches import ERROR_STYLES, FAULT_SCOPES, HELP, KINDS, Switches

__all__ = ["Served", "build_parser", "main"]


class Served(Protocol):
    """What the process needs of a fake backend (`FakeBackend` is one)."""

    @property
    def base_url(self) -> str: ...

    async def astart(self) -> object: ...

    async def astop(self) -> None: ...


def _loading(value: str) -> bool | str:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    if lowered == "refuse":
        return "refuse"
    raise argparse.ArgumentTypeError("loading is true, false or refuse")


# argparse settings by the field's annotation (annotations are strings under `from __future__`).
_BY_TYPE: dict[str, dict[str, Any]] = {
    "int": {"type": int},
    "int | None": {"type": int},
    "float": {"type": float},
    "float | None": {"type": float},
    "str": {"type": str},
    "str | None": {"type": str},
    "bool": {"action": argparse.BooleanOptionalAction},
    "bool | None": {"action": argparse.BooleanOptionalAction},
    "bool | str": {"type": _loading, "metavar": "{true,false,refuse}"},
    "str | dict[str, Any] | None": {"type": str, "metavar": "BODY"},
    "tuple[str, ...] | None": {"type": str, "metavar": "PATHS"},
    "tuple[int, ...] | None": {"type": str, "metavar": "OFFSETS"},
}
_CHOICES: dict[str, tuple[str, ...]] = {"fault_scope": FAULT_SCOPES, "error_style": ERROR_STYLES}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aifabric.testing.fake_backend",
        description="A fake OpenAI-compatible inference backend with fault-injection switches "
        "(docs/fake-backend.md). Switches can be changed later with POST /_fake/config.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop (a faster upstream for benchmarks)"
    )
    parser.add_argument("--kind", choices=KINDS, default="vllm", help=HELP["kind"])
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="ID",
        help="a served model id (repeatable; default m)",
    )
    for field in dataclasses.fields(Switches):
        if field.name in ("kind", "models"):
            continue
        settings = dict(_BY_TYPE[str(field.type)])
        if field.name in _CHOICES:
            settings["choices"] = _CHOICES[field.name]
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag, dest=field.name, default=argparse.SUPPRESS, help=HELP[field.name], **settings
        )
    return parser


async def _serve(backend: Served, out: Callable[[str], None]) -> int:
    await backend.astart()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    out(f"ready {backend.base_url}")
    await stop.wait()
    await backend.astop()
    return 0


def main(backend_class: Callable[..., Served], argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, build `backend_class(kind, models, port, host=..., **switches)` and serve it."""
    args = vars(build_parser().parse_args(argv))
    host, port, kind, fast = args.pop("host"), args.pop("port"), args.pop("kind"), args.pop("uvloop")
    models = tuple(args.pop("models") or ("m",))
    try:
        backend = backend_class(kind, models, port, host=host, **args)
    except (TypeError, ValueError) as exc:
        print(f"fake_backend: {exc}", file=sys.stderr)
        return 2

    def out(line: str) -> None:
        print(line, flush=True)

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if fast:
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_serve(backend, out))
    except OSError as exc:
        print(f"fake_backend: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
