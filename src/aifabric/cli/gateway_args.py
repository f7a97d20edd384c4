"""Options commands share: where a running gateway is and its key; what a port number may be."""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit

from aifabric.cli.running import running_url

__all__ = ["add_gateway_arguments", "gateway_url", "port_number"]


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535; anything else is a usage error."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return port


def gateway_url(text: str) -> str:
    """An argparse type: an http(s) URL with a host, like http://127.0.0.1:8000 (a /v1 suffix is fine)."""
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be a URL like http://127.0.0.1:8000, got {text!r}")
    return text


def add_gateway_arguments(
    parser: argparse.ArgumentParser, *, timeout: float, key_help: str, admin: bool = False
) -> None:
    """`--url`, `--api-key`, `--timeout`. With `admin` (commands that read operator views) the key
    defaults to $FABRIC_ADMIN_KEY, then $FABRIC_MASTER_KEY."""
    parser.add_argument(
        "--url",
        type=gateway_url,
        default=os.environ.get("AIFABRIC_URL") or running_url() or "http://127.0.0.1:8000",
        help="the gateway (default: $AIFABRIC_URL, else the running `aifabric up`'s, else "
        "http://127.0.0.1:8000)",
    )
    key = os.environ.get("FABRIC_MASTER_KEY")
    if admin:
        key = os.environ.get("FABRIC_ADMIN_KEY") or key
    parser.add_argument("--api-key", default=key, help=key_help)
    parser.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per request (default {timeout:g})"
    )
