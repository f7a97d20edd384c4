"""`aifabric keys create|list|revoke|rotate`: the API keys applications use, in the key store.

    keys create --name APP [--roles r1,r2] [--rpm N] [--tpm N] [--concurrency N]
                [--budget AMOUNT/PERIOD] [--priority interactive|batch] [--expires DATE] [--scope admin]
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
HELP = "Create, list, revoke and rotate the API keys of applications (with roles, limits, priority)."


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_help = "fabric file whose `keys:` store to use (default: the embedded default's)"

    create = sub.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", required=True, metavar="APP", help="who uses it (shown in usage)")
    create.add_argument("--roles", metavar="R1,R2", help="the only roles it may use (default: all)")
    create.add_argument("--rpm", type=_positive, metavar="N", help="requests per minute")
    create.add_argument("--tpm", type=_positive, metavar="N", help="tokens per minute")
    create.add_argument("--concurrency", type=_positive, metavar="N", help="requests in flight at once")
    create.add_argument("--budget", metavar="AMOUNT/PERIOD", help="spend per day or month, e.g. 20/day")
    create.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default=Priority.INTERACTIVE.value,
        help="its place in a busy backend's queue (default: interactive)",
    )
    create.add_argument("--expires", metavar="DATE", help="2027-01-31, 2027-01-31T18:00 (UTC) or 30d")
    create.add_argument("--scope", choices=["admin"], help="admin: may also use the operator views")
    create.add_argument("--config", "-c", metavar="FILE", help=config_help)
    create.add_argument("--json", action="store_true", help="print the key and its settings as JSON")

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
        budget = parse_budget(args.budget) if args.budget else None
        expires = parse_expiry(args.expires, now) if args.expires else None
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=exit_codes.USAGE) from None
    roles = None
    if args.roles is not None:
        roles = tuple(dict.fromkeys(r.strip() for r in args.roles.split(",") if r.strip()))
        unknown = [r for r in roles if config.resolve_role(r) is None]
        if unknown or not roles:
            valid = ", ".join(sorted(config.roles))
            raise CommandError(
                f"--roles names no role of {config.source}: {', '.join(unknown) or '(empty)'}; "
                f"roles there: {valid}",
                exit_code=exit_codes.USAGE,
            )
        # An alias stands for its role: the gateway checks role names.
        roles = tuple(dict.fromkeys(config.resolve_role(r).name for r in roles))  # type: ignore[union-attr]
    spec = KeySpec(
        name=name,
        roles=roles,
        rpm=args.rpm,
        tpm=args.tpm,
        concurrency=args.concurrency,
        budget=budget,
        priority=Priority(args.priority),
        expires=expires,
        admin=args.scope == "admin",
    )
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


def _list(args: argparse.Namespace, store: KeyStore, now: float, console: Console) -> int:

    views = [r.view(now) for r in store.load()]
    if args.json:
        console.json(views)
        return exit_codes.OK
    if not views:
        console.print(f"no keys in {store.describe()}: `aifabric keys create --name APP` makes one")
        return exit_codes.OK
    header = ("NAME", "KEY", "STATUS", "ROLES", "RPM", "TPM", "BUDGET", "PRIORITY", "EXPIRES")
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
                v["budget"] or "-",
                v["priority"],
                v["expires"] or "-",
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
