"""`aifabric up [--config FILE] [--host H] [--port P]`: local backends, then the gateway, in one command.

Starts every backend of the fabric file that has a `local:` launch spec (with no file: the embedded
default, the seed's three roles on CPU models that PyPI packages ship), shows their progress until each
answers its readiness probe, then serves the gateway in this process. A backend that crashes is
restarted with backoff. Ctrl-C or SIGTERM stops the gateway, then every backend (no orphans, ports freed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import port_number
from aifabric.cli.overrides import Overrides
from aifabric.cli.running import forget_running, record_running
from aifabric.config.defaults import load_config_or_default
from aifabric.config.schema import FabricConfig
from aifabric.core import exit_codes
from aifabric.errors import CommandError

if TYPE_CHECKING:
    from aifabric.gateway.app import Gateway
    from aifabric.gateway.reload import ReloadOutcome
    from aifabric.local.supervisor import Supervisor

NAME = "up"
HELP = "Start the local backends of a fabric file (default: the embedded CPU fabric), then the gateway."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
    parser.add_argument("--host", help="gateway listen address (default: gateway.host of the file)")
    parser.add_argument(
        "--port", type=port_number, help="gateway listen port (default: gateway.port of the file)"
    )
    parser.add_argument(
        "--local-port-base",
        type=port_number,
        metavar="N",
        help="move the local backends to ports N, N+1, ... (default: the ports the file gives them)",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where each local backend's log goes (default: monitoring.log_dir, else "
        "$XDG_STATE_HOME/aifabric/logs, i.e. ~/.local/state/aifabric/logs)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up if the local backends are not all ready by then (default: 600)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("AIFABRIC_LOG_LEVEL", "warning"),
        choices=["debug", "info", "warning", "error"],
        help="gateway log level (default: warning, so the console shows progress and problems)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.cli.serve import listen_error
    from aifabric.local.launch import default_log_dir, local_backends, process_spec
    from aifabric.local.ports import port_in_use, port_in_use_message
    from aifabric.local.supervisor import Supervisor
    from aifabric.observability.logging import configure_logging

    configure_logging(args.log_level)
    config = load_config_or_default(args.config)
    if args.local_port_base is not None:
        last = args.local_port_base + len(local_backends(config)) - 1
        if args.local_port_base < 1 or last > 65535:
            raise CommandError(
                f"--local-port-base {args.local_port_base} would put the local backends on ports "
                f"{args.local_port_base}-{last}: choose a base from 1 so that the last is at most 65535"
            )
    # The same overrides on every reloaded config (SIGHUP, `config reload`, watch: true).
    overrides = Overrides(local_port_base=args.local_port_base)
    config = overrides.apply(config)
    host = args.host or config.gateway.host
    port = args.port if args.port is not None else config.gateway.port
    try:
        in_use = port_in_use(host, port)  # port 0 still checks that the address is this machine's
    except OSError as exc:
        raise CommandError(listen_error(host, port, exc)) from None
    if port and in_use:
        raise CommandError(f"{port_in_use_message(host, port)}; stop it or choose another with --port")

    # Resolves models (a missing one fails here) and makes re-encoded weights once (local.requantize).
    specs = [process_spec(b, say=console.print) for b in local_backends(config)]
    clash = next((s.name for s in specs if s.port == port), None)
    if clash:
        raise CommandError(f"the gateway and local backend {clash!r} are both given port {port}")
    log_dir = Path(args.log_dir).expanduser() if args.log_dir else default_log_dir(config)
    supervisor = Supervisor(specs, log_dir=log_dir, out=console.out, live=console.is_tty)
    supervisor.check_ports()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if specs:
            console.print(f"starting {len(specs)} local backend(s) from {config.source}; logs in {log_dir}")
            supervisor.start()
            if not supervisor.wait_ready(stop, timeout=args.ready_timeout):
                console.print("stopping")
                return exit_codes.OK
        if stop.is_set():
            return exit_codes.OK
        _serve(config, host, port, console, stop, overrides, supervisor)
        return exit_codes.OK
    finally:
        forget_running()
        if specs:
            console.print("stopping local backends...")
        supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if specs:
            console.print("stopped")


def _serve(
    config: FabricConfig,
    host: str,
    port: int,
    console: Console,
    stopped: threading.Event,
    overrides: Overrides | None = None,
    supervisor: Supervisor | None = None,
) -> None:
    from aifabric.gateway.app import run_loop, serve_gateway, settle_heap, settled

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if stopped.is_set():  # a signal came between the backends' readiness and here
                return
            gateways: list[Gateway] = []

            def ready(gateway: Gateway) -> None:
                gateways.append(gateway)
                settle_heap()  # as `aifabric serve` does: startup's objects out of the collector's way
                if supervisor is not None:
                    supervisor.on_state = gateway.local_backend_changed
                    gateway.attach_local(supervisor)  # POST /admin/backends/NAME/stop|start
                if not config.source.startswith("<"):  # POST /admin/config/reload, watch: true
                    gateway.reloader = settled(lambda: _reloader(config, gateway, overrides))
                # With --port 0, the port the listener got.
                listening = gateway.server.port if gateway.server is not None else port
                # Recorded before it is said: a script that reacts to the message finds the record.
                record_running(_base_url(config, host, listening))  # `aifabric status` asks here
                _print_ready(config, host, listening, console)

            loop.add_signal_handler(signal.SIGHUP, lambda: _reload(gateways, console))
            await serve_gateway(config, host, port, stop, ready=ready)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                # Back to the handler that sets `stopped`: a second Ctrl-C while backends stop is harmless.
                signal.signal(sig, lambda *_: stopped.set())

    run_loop(main())  # the gateway's own choice of event loop, as `aifabric serve` runs it


def _reload(gateways: list[Gateway], console: Console) -> None:
    """SIGHUP: re-read the fabric file (see `_reloader`), said on the console."""
    reloader = gateways[0].reloader if gateways else None
    if reloader is None:  # not serving yet, or a fabric that is not a file
        return
    outcome = reloader()
    gateways[0].reloads.record(outcome)
    (console.print if outcome.applied else console.error)(outcome.message)


def _reloader(config: FabricConfig, gateway: Gateway, overrides: Overrides | None) -> ReloadOutcome:
    """Re-read the fabric file. Roles, aliases and remote backends change in place; a change to the
    local backends themselves (what `up` launched) needs a restart, and is refused with that said."""
    from aifabric.gateway.reload import reload_from_file
    from aifabric.local.launch import local_backends

    def refuse(new: FabricConfig) -> str | None:
        if local_backends(new) != local_backends(config):
            return "its local backends changed; restart `aifabric up` to apply"
        return None

    return reload_from_file(
        gateway,
        config.source,
        adapt=overrides.apply if overrides is not None else None,
        refuse=refuse,
    )


def _base_url(config: FabricConfig, host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    scheme = "https" if config.gateway.tls is not None else "http"
    return f"{scheme}://{shown}:{port}"


def _print_ready(config: FabricConfig, host: str, port: int, console: Console) -> None:
    base = _base_url(config, host, port)
    chat = next((n for n, r in config.roles.items() if r.kind == "chat"), None)
    embed = next((n for n, r in config.roles.items() if r.kind == "embeddings"), None)
    lines = [
        "",
        f"aifabric is up: {base}/v1  (OpenAI-compatible; roles: {', '.join(config.roles)})",
        "try:",
        f"  curl -s {base}/v1/models | jq -r '.data[].id'",
    ]
    if chat:
        body = f'{{"model":"{chat}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":10}}'
        lines.append(
            f"  curl -X POST {base}/v1/chat/completions -H \"Content-Type: application/json\" -d '{body}'"
        )
    if embed:
        body = f'{{"model":"{embed}","input":"test"}}'
        lines.append(f"  curl -X POST {base}/v1/embeddings -H \"Content-Type: application/json\" -d '{body}'")
    lines.append(f"status page: {base}/ui   live view: aifabric status --url {base}")
    lines.append(f"checks: aifabric health, aifabric smoke --url {base}")
    lines.append("Ctrl-C stops everything.")
    console.print("\n".join(lines))
