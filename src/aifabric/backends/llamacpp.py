"""llama.cpp's own `llama-server`: `/health` (503 "Loading model" while loading), `/v1/models`, `/slots`.

`/slots` lists the server's parallel decoding slots; when every slot is busy, new requests wait in
its queue, which is what "degraded" means here. Servers started without `--slots` answer 501 there:
then there is simply no load signal.
"""

from __future__ import annotations

from typing import Any

from aifabric.backends._errors import parse_json
from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.config.schema import ClientApi
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "LlamaServerAdapter", "slots_load"]


def slots_load(doc: Any) -> tuple[dict[str, float], str | None]:
    """Busy and total slots from `/slots`, and the saturation reason (None when a slot is free)."""
    if not isinstance(doc, list) or not doc:
        return {}, None
    busy = 0
    for slot in doc:
        if not isinstance(slot, dict):
            continue
        # `is_processing` since 2024; before it, `state` 0 = idle, 1 = processing.
        if slot.get("is_processing") is True or slot.get("state") == 1:
            busy += 1
    total = len(doc)
    load = {"slots_busy": float(busy), "slots_total": float(total)}
    if busy >= total:
        return load, f"saturated: all {total} slots busy, new requests queue"
    return load, None


class LlamaServerAdapter(BackendAdapter):
    kind = "llamacpp"
    probe_paths = ("/health", "/v1/models", "/slots")
    # llama-server serves these itself (tools/server): /v1/responses and /v1/responses/input_tokens,
    # /v1/messages and /v1/messages/count_tokens, /v1/rerank (with --reranking),
    # /v1/audio/transcriptions.
    native_apis = frozenset(
        {
            ClientApi.RESPONSES,
            ClientApi.INPUT_TOKENS,
            ClientApi.MESSAGES,
            ClientApi.COUNT_TOKENS,
            ClientApi.RERANK,
            ClientApi.TRANSCRIPTION,
        }
    )
    # Its native /v1/responses *stream* lacks `content_index` on the text deltas, and the official
    # `openai` SDK's responses.stream() fails on it: streamed Responses requests are translated.
    translated_streams = frozenset({ClientApi.RESPONSES})

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        await ctx.get_ok(f"{ctx.origin}/health", "GET /health", self)
        served = await ctx.models(self)
        load: dict[str, float] = {}
        saturated = None
        body = await ctx.get_optional(f"{ctx.origin}/slots")
        if body is not None:
            load, saturated = slots_load(parse_json(body))
        return self.up(ctx, served, load, saturated)


ADAPTER = LlamaServerAdapter()
