"""`aifabric wake HOST [--config FILE] [--url URL] [--api-key KEY] [--json]`: wake a sleeping host by hand.

When a gateway answers at `--url` (default: $AIFABRIC_URL, the running `aifabric up`, :8000), it is
asked to do it (`POST /admin/hosts/HOST/wake`): it sends the host's Wake-on-LAN magic packet
(`hosts.HOST.wake: {mac, broadcast, port}`) or runs its wake command (`wake: {command: ...}`), raises
the INFO `host_woken` alert naming "by hand (aifabric wake)", and routes to the host once it serves.
When no gateway listens there (or it does not know the host), the wake is sent from here with the
fabric file of `--config`, as before, and the output says that no alert was raised.

Exit 0 sent, 1 the send failed (or the gateway refused the key), 2 no such host or no `wake:` for it.
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import quote

from aifabric.cli.console import Console
from aifabric.cli.gateway_args import add_gateway_arguments
from aifabric.config.defaults import load_config_or_default
from aifabric.core import exit_codes
from aifabric.errors import CommandError
from aifabric.health.power import wake_host
from aifabric.ops.admin_call import AdminCall, post_admin

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "wake"
HELP = "Wake a sleeping host of the fabric file: its Wake-on-LAN packet or wake command (exit 0/1/2)."

# The command may run for up to 30 s on the gateway (health.power), plus the request's own time.
_TIMEOUT = 40.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", metavar="HOST", help="a host of the fabric file (hosts.HOST)")
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="fabric file, used when no gateway answers at --url (default: the embedded default)",
    )
    add_gateway_arguments(
        parser,
        timeout=_TIMEOUT,
        key_help="a key of gateway.admin_keys, needed when the gateway has keys (default: "
        "$FABRIC_ADMIN_KEY, else $FABRIC_MASTER_KEY); without keys, loopback only",
        admin=True,
    )
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")


def run(args: argparse.Namespace, console: Console) -> int:
    path = f"/admin/hosts/{quote(args.host, safe='')}/wake"
    call = post_admin(args.url, path, api_key=args.api_key, timeout=args.timeout)
    if call.status == 200:
        how = str(call.body.get("how", ""))
        alert = call.body.get("alert")
        if args.json:
            console.json({"host": args.host, "woken": True, "how": how, "via": call.url, "alert": alert})
        else:
            console.print(f"woke {args.host}: {how}")
            console.print(f"sent by the gateway at {call.url}, which raised the INFO alert {alert}")
        return exit_codes.OK
    direct = _why_direct(call, args.host)
    if direct is None:
        raise _refused(call, args.host)
    return _wake_directly(args, console, direct)


def _why_direct(call: AdminCall, host: str) -> str | None:
    """Why the wake is sent from here rather than by the gateway; None when the gateway must be
    followed (it answered, and refused)."""
    if call.status is None:
        return f"no gateway answers at {call.url}" if call.refused else None
    if call.status == 404 and call.code == "host_not_found":
        return f"the gateway at {call.url} has no host {host!r}"
    if call.status == 404 and call.code == "unknown_route":
        return f"the gateway at {call.url} has no wake route (older than `aifabric wake` through it)"
    return None


def _refused(call: AdminCall, host: str) -> CommandError:
    message = f"the gateway at {call.url} did not wake {host}: {call.error or 'no answer'}"
    if call.status is None:
        # It may have received the request: waking from here too could wake the host twice.
        return CommandError(
            message + "; it may still send the wake: see its alerts (GET /alerts) or retry with a longer "
            "--timeout",
            exit_codes.FAILED,
        )
    if call.status in (401, 403):
        return CommandError(
            message + "; pass an admin key with --api-key (or $FABRIC_ADMIN_KEY)", exit_codes.FAILED
        )
    return CommandError(message, exit_codes.USAGE if call.status == 409 else exit_codes.FAILED)


def _wake_directly(args: argparse.Namespace, console: Console, why: str) -> int:
    config = load_config_or_default(args.config)
    host = config.hosts.get(args.host)
    if host is None:
        known = ", ".join(config.hosts) or "none"
        raise CommandError(
            f"no host named {args.host!r} in {config.source} (hosts: {known}); {why}", exit_codes.USAGE
        )
    if host.wake is None:
        raise CommandError(
            f"host {host.name!r} has no wake: section in {config.source}; add "
            'wake: {mac: "aa:bb:cc:dd:ee:ff", broadcast: BROADCAST} or wake: {command: "..."} '
            "(and always_on: false)",
            exit_codes.USAGE,
        )
    how = asyncio.run(wake_host(host))
    note = f"{why}: sent from here, so no alert was raised"
    if args.json:
        console.json({"host": host.name, "woken": True, "how": how, "via": None, "alert": None, "note": note})
    else:
        console.print(f"woke {host.name}: {how}")
        console.print(note)
    return exit_codes.OK
