"""Loopback helpers for tests, benchmarks and drills."""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_port_block"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (the OS's pick; a race with other binders is possible but rare)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port B such that B .. B+count-1 are all free now (`aifabric up --local-port-base B`)."""
    for _ in range(200):
        base = free_port(host)
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")
