"""Shared data and helpers of the fabric-file tests (a uniquely named module: `conftest` is ambiguous)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aifabric.errors import ConfigProblem

SEED = Path(__file__).parent / "fixtures" / "seed.yaml"
SEED_ENV = {"FABRIC_MASTER_KEY": "master-key-7f3a9c", "OPENAI_API_KEY": "sk-test-openai-42d1e8"}

# A small valid fabric that the error tests break one way at a time.
BASE = """\
hosts:
  box: {address: box.example, always_on: true}
backends:
  box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1"}
  box-embed: {host: box, kind: tei, url: "http://box.example:8080/v1"}
roles:
  chat-fast:
    kind: chat
    targets: [{backend: box-vllm, model: qwen}]
  chat-deep:
    kind: chat
    targets: [{backend: box-vllm, model: llama}]
  embed:
    kind: embeddings
    targets: [{backend: box-embed, model: bge}]
aliases:
  local/chat: chat-fast
"""


def line_of(text: str, snippet: str) -> int:
    """1-based line of the first line containing `snippet`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if snippet in line:
            return number
    raise AssertionError(f"{snippet!r} not in the text")


Write = Callable[[str], Path]
Problems = Callable[..., list[ConfigProblem]]
