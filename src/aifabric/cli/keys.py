"""`aifabric keys create|update|list|revoke|rotate`: the API keys applications use, in the key store.

    keys create --name APP [--roles r1,r2] [--rpm N] [--tpm N] [--concurrency N]
                [--budget AMOUNT/PERIOD] [--priority interactive|batch] [--expires DATE] [--scope admin]
    keys update NAME [the same settings]  the same key, new settings; `none` clears a limit
                (`--rpm none`, `--budget none`, `--expires none`), `--roles '*'` allows every role
    keys list [--json]                  never a key: its first characters only
    keys revoke NAME                    stops working within seconds, on every worker and replica
    keys rotate NAME [--grace 24h]      a new key; the old one works until the grace period ends

The store is the fabric file's `keys:` (see docs/tenancy.md); a running gateway picks every change up
by itself. `create` and `rotate` print the key once, on stdout alone, so `KEY=$(aifabric keys create
...)` works; what it is goes to stderr.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from aifabric.cli.console import Console
from aifabric.config.durations import parse_duration
from aifabric.config.money import parse_budget
from aifabric.config.schema import FabricConfig
from aifabric.core import exit_codes
from aifabric.errors import CommandError
from aifabric.tenancy.keys import parse_expiry, validate_name
from aifabric.tenancy.keystore import KeyStore
from aifabric.tenancy.principal import Priority

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "keys"
HELP = "Create, update, list, revoke and rotate the API keys of applications (with roles, limits, priority)."


CLEAR = "none"  # `keys update NAME --rpm none`: the limit is lifted
ALL_ROLES = "*"  # `keys update NAME --roles '*'`: every role again


def _limit(text: str) -> int | None:
    """A positive whole number, or `none` (no limit)."""
    if text.strip().lower() == CLEAR:
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (or `{CLEAR}`)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _settings_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    """A key's settings, the one definition `create` and `update` share. For `update` a flag left out
    keeps the key's setting (argparse leaves it out of the namespace), and `none` clears one."""
    absent: dict[str, Any] = {"default": argparse.SUPPRESS} if update else {}
    clear = f" (`{CLEAR}`: no limit)" if update else ""
    every = f"; `{ALL_ROLES}`: every role" if update else " (default: all)"
    parser.add_argument("--roles", metavar="R1,R2", help=f"the only roles it may use{every}", **absent)
    parser.add_argument("--rpm", type=_limit, metavar="N", help=f"requests per minute{clear}", **absent)
    parser.add_argument("--tpm", type=_limit, metavar="N", help=f"tokens per minute{clear}", **absent)
    parser.add_argument(
        "--concurrency",
        type=_limit,
        metavar="N",
        help=f"requests in flight at once{clear}",
        **absent,
    )
    parser.add_argument(
        "--budget",
        metavar="AMOUNT/PERIOD",
        help=f"spend per day or month, e.g. 20/day{clear}",
        **absent,
    )
    parser.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default=argparse.SUPPRESS if update else Priority.INTERACTIVE.value,
        help="its place in a busy backend's queue" + ("" if update else " (default: interactive)"),
    )
    parser.add_argument(
        "--expires",
        metavar="DATE",
        help="2027-01-31, 2027-01-31T18:00 (UTC) or 30d" + (f"; `{CLEAR}`: never" if update else ""),
        **absent,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_help = "fabric file whose `keys:` store to use (default: the embedded default's)"

    create = sub.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", required=True, metavar="APP", help="who uses it (shown in usage)")
    _settings_arguments(create, update=False)
    create.add_argument("--scope", choices=["admin"], help="admin: may also use the operator views")
    create.add_argument("--config", "-c", metavar="FILE", help=config_help)
    create.add_argument("--json", action="store_true", help="print the key and its settings as JSON")

    update = sub.add_parser("update", help="change a key's settings (the key itself stays the same)")
    update.add_argument("name", metavar="NAME")
    _settings_arguments(update, update=True)
    update.add_argument("--config", "-c", metavar="FILE", help=config_help)
    update.add_argument("--json", action="store_true", help="print the key's settings as JSON")

    listing = sub.add_parser("list", help="every key's name and settings (never the key)")
    listing.add_argument("--config", "-c", metavar="FILE", help=config_help)
    listing.add_argument("--json", action="store_true")

    revoke = sub.add_parser("revoke", help="stop a key now")
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("--config", "-c", metavar="FILE", help=config_help)

    rotate = sub.add_parser("rotate", help="a new key for NAME; the old one works for a grace period")
    rotate.add_argument("name", metavar="NAME")
    rotate.add_argument(
        "--grace", default="24h", metavar="DURATION", help="how long the old key keeps working (default 24h)"
    )
    rotate.add_argument("--config", "-c", metavar="FILE", help=config_help)
    rotate.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.config.defaults import load_config_or_default
    from aifabric.tenancy.keystore import open_key_store

    config = load_config_or_default(args.config)
    store = open_key_store(config)
    try:
        now = time.time()
        if args.action == "create":
            return _create(args, config, store, now, console)
        if args.action == "update":
            return _update(args, config, store, now, console)
        if args.action == "list":
            return _list(args, store, now, console)
        if args.action == "revoke":
            from aifabric.tenancy.manage import revoke_key

            revoke_key(store, args.name, now)
            console.error(f"revoked '{args.name}': running gateways refuse it within seconds")
            return exit_codes.OK
        return _rotate(args, store, now, console)
    finally:
        store.close()


def _create(
    args: argparse.Namespace, config: FabricConfig, store: KeyStore, now: float, console: Console
) -> int:
    from aifabric.tenancy.manage import KeySpec, create_key

    try:
        name = validate_name(args.name)
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=exit_codes.USAGE) from None
    spec = KeySpec(name=name, admin=args.scope == "admin", **_settings(args, config, now))
    key, record = create_key(store, spec, now)
    if args.json:
        console.json({"key": key, **record.view(now)})
    else:
        console.print(key)
        console.error(
            f"created key '{name}' in {store.describe()}: store it now, it is not shown again "
            "(running gateways accept it within seconds)"
        )
    if len(store.load()) == 1 and not config.gateway.api_keys:
        # The first key closes an open gateway: say so, or clients that sent no key start failing with
        # no hint of why. (Revoking it does not reopen the gateway: docs/tenancy.md.)
        console.error(
            f"note: this is the first key in {store.describe()}: gateways that use this store (the "
            "fabric's `keys:`) now answer 401 to any /v1 request without a key; give every client a key"
        )
    return exit_codes.OK


def _settings(args: argparse.Namespace, config: FabricConfig, now: float) -> dict[str, Any]:
    """The settings given on the command line, as KeySpec's fields (only those given, for `update`)."""
    given = vars(args)
    out: dict[str, Any] = {}
    for field in ("rpm", "tpm", "concurrency"):
        if field in given:
            out[field] = given[field]
    if "priority" in given:
        out["priority"] = Priority(given["priority"])
    try:
        if "budget" in given:
            text = given["budget"]
            out["budget"] = parse_budget(text) if text and text.strip().lower() != CLEAR else None
        if "expires" in given:
            text = given["expires"]
            out["expires"] = parse_expiry(text, now) if text and text.strip().lower() != CLEAR else None
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=exit_codes.USAGE) from None
    if "roles" in given:
        out["roles"] = _roles(given["roles"], config)
    return out


def _roles(text: str | None, config: FabricConfig) -> tuple[str, ...] | None:
    if text is None or text.strip() == ALL_ROLES:
        return None
    roles = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    unknown = [r for r in roles if config.resolve_role(r) is None]
    if unknown or not roles:
        valid = ", ".join(sorted(config.roles))
        raise CommandError(
            f"--roles names no role of {config.source}: {', '.join(unknown) or '(empty)'}; "
            f"roles there: {valid}",
            exit_code=exit_codes.USAGE,
        )
    # An alias stands for its role: the gateway checks role names.
    return tuple(dict.fromkeys(config.resolve_role(r).name for r in roles))  # type: ignore[union-attr]


def _update(
    args: argparse.Namespace, config: FabricConfig, store: KeyStore, now: float, console: Console
) -> int:
    from aifabric.tenancy.manage import update_key

    changes = _settings(args, config, now)
    if not changes:
        raise CommandError(
            "nothing to change: give a setting, e.g. `aifabric keys update NAME --rpm 600` "
            f"(`--rpm {CLEAR}` lifts a limit)",
            exit_code=exit_codes.USAGE,
        )
    record = update_key(store, args.name, changes)
    if args.json:
        console.json(record.view(now))
    else:
        what = ", ".join(f"{k} {_shown(v)}" for k, v in changes.items())
        console.error(f"updated '{args.name}': {what} (running gateways apply it within seconds)")
    return exit_codes.OK


def _shown(value: object) -> str:
    if value is None:
        return CLEAR
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, Priority):
        return value.value
    if isinstance(value, float):  # an expiry
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _list(args: argparse.Namespace, store: KeyStore, now: float, console: Console) -> int:

    views = [r.view(now) for r in store.load()]
    if args.json:
        console.json(views)
        return exit_codes.OK
    if not views:
        console.print(f"no keys in {store.describe()}: `aifabric keys create --name APP` makes one")
        return exit_codes.OK
    header = (
        "NAME",
        "KEY",
        "STATUS",
        "ROLES",
        "RPM",
        "TPM",
        "CONCURRENCY",
        "BUDGET",
        "PRIORITY",
        "EXPIRES",
        "OLD KEY UNTIL",
    )
    rows = [header]
    for v in views:
        rows.append(
            (
                v["name"],
                v["prefix"],
                v["status"] + (" (admin)" if v["scope"] else ""),
                ",".join(v["roles"]) if v["roles"] is not None else "*",
                str(v["rpm"] or "-"),
                str(v["tpm"] or "-"),
                str(v["concurrency"] or "-"),
                v["budget"] or "-",
                v["priority"],
                v["expires"] or "-",
                v["previous_valid_until"] or "-",  # a rotated key's predecessor, in its grace period
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        console.print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return exit_codes.OK


def _rotate(args: argparse.Namespace, store: KeyStore, now: float, console: Console) -> int:
    from aifabric.tenancy.manage import rotate_key

    try:
        grace = parse_duration(args.grace)
    except ValueError as exc:
        raise CommandError(f"--grace: {exc}", exit_code=exit_codes.USAGE) from None
    key, record = rotate_key(store, args.name, now, grace)
    if args.json:
        console.json({"key": key, **record.view(now)})
    else:
        console.print(key)
        console.error(
            f"rotated '{args.name}': the previous key works until {record.view(now)['previous_valid_until']}"
            if grace > 0
            else f"rotated '{args.name}': the previous key stops working within seconds"
        )
    return exit_codes.OK
