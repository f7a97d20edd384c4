"""`aifabric serve --config FILE [--host H] [--port P] [--workers N]`: the gateway alone."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from typing import NoReturn

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import port_number
from aifabric.cli.overrides import Overrides
from aifabric.config.defaults import load_config_or_default
from aifabric.config.schema import FabricConfig
from aifabric.core import exit_codes
from aifabric.errors import CommandError, ConfigError

NAME = "serve"
# What the master of `--workers N` handles; held while it forks (see spawn).
MASTER_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

HELP = "Run the gateway for a fabric file (no local backends are started; see `aifabric up`)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
    parser.add_argument("--host", help="listen address (default: gateway.host of the file)")
    parser.add_argument("--port", type=port_number, help="listen port (default: gateway.port of the file)")
    parser.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default: gateway.workers)"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one JSON line per API request (gateway.access_log)"
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("AIFABRIC_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.observability.logging import configure_logging

    configure_logging(args.log_level)
    config = load_config_or_default(args.config)
    host = args.host or config.gateway.host
    port = args.port if args.port is not None else config.gateway.port
    workers = args.workers if args.workers is not None else config.gateway.workers
    if workers < 1:
        raise CommandError("--workers must be at least 1")
    from aifabric.state import check_state

    # The same overrides on every reloaded config: a reload keeps --access-log, and the worker count
    # (which the gateway reads to know its workers share state) stays the number of processes running.
    overrides = Overrides(access_log=args.access_log, workers=workers)
    config = overrides.apply(config)
    check_state(config)  # before any fork: a missing Redis client must not crash-loop the workers
    _check_port(host, port)
    _say_native()
    if workers == 1:
        from aifabric.gateway.app import run_gateway

        run_gateway(
            config,
            host,
            port,
            ready=lambda gw: console.print(_ready_line(host, port, 1)),
            config_path=args.config,
            adapt=overrides.apply,
        )
        return exit_codes.OK
    return _run_workers(config, host, port, workers, console, args.config, overrides)


def _ready_line(host: str, port: int, workers: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    plural = "s" if workers > 1 else ""
    return f"aifabric gateway ready on {base}/v1 ({workers} worker{plural}); status page: {base}/ui"


def _check_port(host: str, port: int) -> None:
    from aifabric.local.ports import describe_port_holder, port_in_use

    try:
        in_use = port_in_use(host, port)  # port 0 still checks that the address is this machine's
    except OSError as exc:
        raise CommandError(listen_error(host, port, exc)) from None
    if port and in_use:
        holder = describe_port_holder(port)
        raise CommandError(
            f"port {port} is already in use{': ' + holder if holder else ''}. "
            "Stop that process or choose another port with --port."
        )


def listen_error(host: str, port: int, exc: OSError) -> str:
    """Why the gateway cannot listen on `host:port` (other than the port being taken), in words."""
    reason = exc.strerror or str(exc)
    return (
        f"cannot listen on {host}:{port}: {reason}. The listen address (--host, or gateway.host in the "
        "fabric file) must be an address of this machine, 0.0.0.0 or ::"
    )


def _run_workers(
    config: FabricConfig,
    host: str,
    port: int,
    workers: int,
    console: Console,
    config_path: str | None,
    overrides: Overrides,
) -> int:
    """Pre-fork: N processes, each with its own SO_REUSEPORT listener (the kernel spreads connections),
    supervised here: a worker that dies is replaced, SIGTERM/SIGINT stop them all."""
    from aifabric.gateway.app import run_gateway
    from aifabric.observability.merged import clear as clear_shared_metrics
    from aifabric.state import default_state_dir

    log = logging.getLogger("aifabric.serve")
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int, *, replacing: bool = False) -> None:
        # The master's signals are held from before the fork until the new pid is recorded: a stop
        # handled in between would signal every worker but this one, which would then serve on with
        # the master waiting for it (seen in CI: SIGTERM as a killed worker was being replaced). The
        # child starts with them held too, so it cannot run the master's handlers it inherited; it
        # takes the default ones first, and a stop already sent to it then ends it at once.
        signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            if stopping:  # a stop came while this worker waited to be replaced
                return
            pid = os.fork()
            if pid == 0:  # child
                child(index, replacing)
            children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)

    def child(index: int, replacing: bool) -> NoReturn:
        for signum in MASTER_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        # A stop ends it at once until the gateway has its own handlers; a reload stays held until
        # it is ready (run_gateway lets it through then), so one sent while it starts is not lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS - {signal.SIGHUP})
        try:
            run_gateway(
                _replacement_config(config_path, overrides, config, index) if replacing else config,
                host,
                port,
                reuse_port=True,
                config_path=config_path,
                adapt=overrides.apply,
                worker=index,
            )
        finally:
            os._exit(exit_codes.OK)

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def hangup(signum: int, frame: object) -> None:
        for pid in list(children):  # each worker reloads the fabric file itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hangup)
    # The workers' counters of an earlier gateway on this port: /metrics sums the files of this one.
    clear_shared_metrics(default_state_dir(port))
    for i in range(workers):
        spawn(i)
    _wait_listening(host, port)
    console.print(_ready_line(host, port, workers))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is not None and not stopping:
            log.warning("worker %d (pid %d) exited with status %d; starting a new one", index, pid, status)
            time.sleep(0.5)
            spawn(index, replacing=True)  # not if a stop came during the pause: spawn checks
    return exit_codes.OK


def _replacement_config(
    config_path: str | None, overrides: Overrides, started: FabricConfig, index: int
) -> FabricConfig:
    """What a worker replacing a dead one serves: the fabric file as it is now, the one its siblings
    read at their last reload (SIGHUP, `config reload`, `gateway.watch`), not the one the master read
    at its start; the master's, if the file no longer loads (the siblings kept theirs too)."""
    if config_path is None:
        return started
    try:
        return overrides.apply(load_config_or_default(config_path))
    except ConfigError as exc:
        logging.getLogger("aifabric.serve").error(
            "worker %d starts on the fabric file as it was when the gateway started: %s", index, exc
        )
        return started


def _wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    import socket

    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    print(f"warning: workers not listening on {host}:{port} after {timeout:g}s", file=sys.stderr)


def _say_native() -> None:
    """Log how the request path runs: compiled (nothing to say), interpreted (slower), or a compiled
    module older than its source (an edited checkout not rebuilt: it runs the last build's code)."""
    from aifabric.native import check

    status = check()
    log = logging.getLogger("aifabric.serve")
    if status.stale:
        log.warning("%s: this gateway runs the code of the last build", status.summary)
    elif status.interpreted:
        log.info("%s: the same behaviour, more CPU per request", status.summary)
