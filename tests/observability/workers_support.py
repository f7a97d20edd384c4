"""What the tests of `aifabric serve --workers 2`'s summed figures share: its fabric file and keys, and
the state tests' helpers that start it (tests/state/state_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "state"))
from state_support import Serve, serve_workers

__all__ = ["ADMIN", "MASTER", "Serve", "fabric_text", "serve_workers"]

MASTER = "sk-master-workers-4e1d"
ADMIN = "sk-admin-workers-9b2c"


def fabric_text(backend_url: str, *, price: str = "", extra: str = "") -> str:
    """One vllm backend at `backend_url` behind `chat-fast`; a master key for /v1, an admin key for
    /metrics and /status; probes rare (the tests count requests, not probes). `price`: the target's
    (`{input: 1, output: 2}`); `extra`: more top-level keys (`usage:`, `keys:`)."""
    target = "{backend: b, model: m1" + (f", price: {price}" if price else "") + "}"
    return f"""
gateway: {{host: 127.0.0.1, port: 0, api_keys: ["{MASTER}"], admin_keys: ["{ADMIN}"]}}
backends:
  b: {{kind: vllm, url: "{backend_url}", health: {{interval: 1h}}}}
roles:
  chat-fast: {{kind: chat, targets: [{target}]}}
{extra}"""
