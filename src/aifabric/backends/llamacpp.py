"""llama.cpp's own `llama-server`: `/health` (503 "Loading model" while loading), `/v1/models`, `/slots`,
`/metrics`.

`/slots` lists the server's parallel decoding slots; when every slot is busy, new requests wait in
its queue, which is what "degraded" means here. `/metrics` (started with `--metrics`, as `aifabric up`
does) says how many requests are being decoded and how many wait for a slot
(`llamacpp:requests_processing`, `llamacpp:requests_deferred`). Servers started without `--slots` or
`--metrics` answer 501 (or 404) there: then that signal is simply missing.
"""

from __future__ import annotations

from typing import Any

from aifabric.backends._errors import parse_json
from aifabric.backends._metrics import parse_samples
from aifabric.backends.base import BackendAdapter, ProbeContext, RequestField
from aifabric.config.schema import ClientApi
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "LlamaServerAdapter", "metrics_load", "slots_load"]

PROCESSING = "llamacpp:requests_processing"
DEFERRED = "llamacpp:requests_deferred"


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


def metrics_load(metrics_text: str) -> tuple[dict[str, float], str | None]:
    """Requests decoding and waiting for a slot, from `/metrics`; saturated when any waits."""
    samples = parse_samples(metrics_text, (PROCESSING, DEFERRED))
    load: dict[str, float] = {}
    if PROCESSING in samples:
        load["requests_running"] = sum(samples[PROCESSING])
    if DEFERRED in samples:
        load["requests_waiting"] = sum(samples[DEFERRED])
    waiting = load.get("requests_waiting", 0.0)
    return load, (f"saturated: {waiting:g} requests waiting for a slot" if waiting >= 1 else None)


class LlamaServerAdapter(BackendAdapter):
    kind = "llamacpp"
    probe_paths = ("/health", "/v1/models", "/slots", "/metrics")
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
    counts_translated_messages = True  # /v1/messages/count_tokens with Anthropic-shaped messages
    # Its /v1/responses turns the request into a chat-completions one but leaves `text` as it is, and
    # the chat route reads only `response_format`: a JSON schema (or json_object) asked for is ignored,
    # and the answer is free text (responses.parse() fails on it). Translated, the schema becomes
    # `response_format` and llama-server enforces it with a grammar. `max_output_tokens` does cut the
    # answer, but the native Response says `status: completed` all the same (it has no "incomplete"),
    # so a client cannot tell a cut answer from a whole one; translated, `finish_reason: length`
    # becomes `incomplete`. The other fields of the Responses request go into its chat request under
    # their chat names and act there as on chat completions (stop, temperature, top_p seen to; tools
    # reach the prompt alike): checked by hand against the llama-server of llama-cpp-python 0.3.36,
    # the one `aifabric up` builds.
    unhonoured = {ClientApi.RESPONSES: frozenset({RequestField.TEXT_FORMAT, RequestField.MAX_OUTPUT_TOKENS})}

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        await ctx.get_ok(f"{ctx.origin}/health", "GET /health", self)
        served = await ctx.models(self)
        load: dict[str, float] = {}
        why: list[str] = []
        body = await ctx.get_optional(f"{ctx.origin}/slots")
        if body is not None:
            slots, saturated = slots_load(parse_json(body))
            load.update(slots)
            why += [saturated.removeprefix("saturated: ")] if saturated else []
        body = await ctx.get_optional(f"{ctx.origin}/metrics")
        if body is not None:
            queue, saturated = metrics_load(body.decode("utf-8", "replace"))
            load.update(queue)
            why += [saturated.removeprefix("saturated: ")] if saturated else []
        return self.up(ctx, served, load, "saturated: " + "; ".join(why) if why else None)


ADAPTER = LlamaServerAdapter()
