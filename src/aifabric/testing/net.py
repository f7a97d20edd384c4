"""Loopback helpers for tests, benchmarks and drills."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (the OS's pick; a race with other binders is possible but rare)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
