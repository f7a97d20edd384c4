"""The checks "dns NAME": every host name the fabric sends traffic to resolves (nothing is sent to it)."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from urllib.parse import urlsplit

from aifabric.config.schema import FabricConfig
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["dns_checks", "resolve"]


def resolve(name: str, timeout: float) -> tuple[list[str], str]:
    """Addresses of `name` (a DNS lookup, nothing sent to the host), or ([], why not). Bounded by
    `timeout`: a resolver that does not answer must not hang the doctor (the lookup thread is left)."""
    result: list[tuple[list[str], str]] = []

    def lookup() -> None:
        import socket

        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            result.append((sorted({str(i[4][0]) for i in infos}), ""))
        except OSError as exc:
            result.append(([], str(exc.strerror or exc)))

    thread = threading.Thread(target=lookup, name=f"doctor-dns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else ([], f"no answer from the resolver within {timeout:g} s")


def dns_checks(config: FabricConfig, timeout: float) -> list[Check]:
    """One check per host name the fabric sends traffic to: hosts' addresses and backends' URLs."""
    lines = config.loaded.key_lines
    users: dict[str, list[tuple[str, bool]]] = {}  # name -> [(key path, always_on)]
    for host in config.hosts.values():
        users.setdefault(host.address, []).append((f"hosts.{host.name}.address", host.always_on))
    for backend in config.backends.values():
        if backend.local is not None:
            continue  # the supervisor's own loopback listener
        hostname = urlsplit(backend.url).hostname or ""
        on = config.hosts.get(backend.host) if backend.host else None
        users.setdefault(hostname, []).append(
            (f"backends.{backend.name}.url", on.always_on if on is not None else True)
        )
    if config.state != "memory" and not config.state.startswith("unix:"):
        with contextlib.suppress(ValueError):
            hostname = urlsplit(config.state).hostname or ""
            users.setdefault(hostname, []).append(("state", True))
    checks = []
    for name, used in users.items():
        if not name:
            continue
        try:
            ipaddress.ip_address(name)
            continue  # an address: nothing to resolve
        except ValueError:
            pass
        where = tuple(f"{config.source}:{lines[k]}: {k}" if k in lines else k for k, _ in used)
        addresses, error = resolve(name, timeout)
        if addresses:
            shown = ", ".join(addresses[:3]) + (" ..." if len(addresses) > 3 else "")
            checks.append(Check(f"dns {name}", Verdict.PASS, f"resolves to {shown}", details=where))
            continue
        sleeper = not any(always_on for _, always_on in used)
        checks.append(
            Check(
                f"dns {name}",
                Verdict.WARN if sleeper else Verdict.FAIL,
                f"{name} does not resolve ({error})"
                + ("; its host has always_on: false, so it may be powered off" if sleeper else ""),
                "check the spelling where it is written (above); for a tailnet name check "
                "`tailscale status` and that MagicDNS is on",
                where,
            )
        )
    return checks
