"""A fabric file with a key store in the test's directory, and the CLI as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_process import aifabric

sys.path.insert(0, str(Path(__file__).parent.parent / "state"))  # state_support: `serve` as a process

MASTER = "sk-master-5d1c9e7a3b"


def fabric_text(backend_url: str, keys: str, *, extra: str = "", state: str = "memory") -> str:
    return f"""
gateway: {{host: 127.0.0.1, port: 0, api_keys: ["{MASTER}"]}}
state: "{state}"
keys: "{keys}"
backends:
  b: {{kind: vllm, url: "{backend_url}", health: {{interval: 1h}}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
  chat-deep: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
aliases:
  local/chat: chat-fast
{extra}"""


def keys_cli(fabric_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`aifabric keys ...` as an operator runs it: another process, the same fabric file."""
    return aifabric("keys", *args, "--config", str(fabric_file))
