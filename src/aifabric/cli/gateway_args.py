"""The options every command that talks to a running gateway shares: where it is, and its key."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_gateway_arguments"]


def add_gateway_arguments(parser: argparse.ArgumentParser, *, timeout: float, key_help: str) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("AIFABRIC_URL", "http://127.0.0.1:8000"),
        help="the gateway (default: $AIFABRIC_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument("--api-key", default=os.environ.get("FABRIC_MASTER_KEY"), help=key_help)
    parser.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per request (default {timeout:g})"
    )
