"""Ollama: `GET /` ("Ollama is running") and `GET /api/tags` for the models pulled.

Ollama names models `name:tag`, and a request for `llama3` means `llama3:latest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aifabric.backends._errors import parse_json
from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.config.schema import ClientApi
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "OllamaAdapter", "tag_names"]


def tag_names(doc: Any) -> tuple[str, ...]:
    """Model names from `/api/tags` {"models": [{"name": "llama3:latest", ...}]}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        return ()
    names = []
    for m in doc["models"]:
        if isinstance(m, dict):
            name = m.get("name") or m.get("model")
            if isinstance(name, str):
                names.append(name)
    return tuple(names)


def _with_tag(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


class OllamaAdapter(BackendAdapter):
    kind = "ollama"
    probe_paths = ("/", "/api/tags")
    # Ollama's docs: a stateless /v1/responses (since 0.13.3) and Anthropic's /v1/messages.
    native_apis = frozenset({ClientApi.RESPONSES, ClientApi.MESSAGES})

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        await ctx.get_ok(f"{ctx.origin}/", "GET /", self)
        _, body = await ctx.get_ok(f"{ctx.origin}/api/tags", "GET /api/tags", self)
        return self.up(ctx, tag_names(parse_json(body)))

    def serves(self, model: str, served: Sequence[str]) -> bool:
        return model in served or _with_tag(model) in {_with_tag(s) for s in served}


ADAPTER = OllamaAdapter()
