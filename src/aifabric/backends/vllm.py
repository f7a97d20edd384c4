"""vLLM: `/health` (200 when the engine is alive), `/v1/models`, and its own load in `/metrics`.

vLLM does not listen until the model is loaded (connection refused while loading), so a refused
probe is "down" (or "asleep" on a host that may be off). Saturation comes from Prometheus gauges:
`vllm:num_requests_waiting` (queued behind a full batch) and `vllm:kv_cache_usage_perc` (named
`vllm:gpu_cache_usage_perc` before vLLM 0.10), a fraction where 1.0 means the KV cache is full.
"""

from __future__ import annotations

from aifabric.backends._metrics import parse_samples
from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.config.schema import ClientApi
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "VllmAdapter", "vllm_load"]

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")

# A backend is saturated (degraded) from these levels on: requests queue instead of being batched.
SATURATED_WAITING = 4.0
SATURATED_KV_CACHE = 0.95


def vllm_load(metrics_text: str) -> tuple[dict[str, float], str | None]:
    """Load signals from vLLM's /metrics, and the saturation reason in words (None when fine)."""
    samples = parse_samples(metrics_text, (WAITING, RUNNING, *KV_CACHE))
    load: dict[str, float] = {}
    if WAITING in samples:
        load["requests_waiting"] = sum(samples[WAITING])
    if RUNNING in samples:
        load["requests_running"] = sum(samples[RUNNING])
    for name in KV_CACHE:
        if name in samples:
            load["kv_cache_usage"] = max(samples[name])
            break
    why: list[str] = []
    waiting = load.get("requests_waiting", 0.0)
    kv = load.get("kv_cache_usage", 0.0)
    if waiting >= SATURATED_WAITING:
        why.append(f"{waiting:g} requests waiting")
    if kv >= SATURATED_KV_CACHE:
        why.append(f"KV cache {kv:.0%} full")
    return load, ("saturated: " + ", ".join(why) if why else None)


class VllmAdapter(BackendAdapter):
    kind = "vllm"
    probe_paths = ("/health", "/v1/models", "/metrics")
    # vLLM's OpenAI server: /v1/responses, /v1/messages (Anthropic), /v1/rerank, /v1/score and
    # /v1/audio/transcriptions for models of those tasks. Token counts go through its /tokenize.
    native_apis = frozenset(
        {ClientApi.RESPONSES, ClientApi.MESSAGES, ClientApi.RERANK, ClientApi.TRANSCRIPTION}
    )
    tokenize_path = "/tokenize"

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        await ctx.get_ok(f"{ctx.origin}/health", "GET /health", self)
        served = await ctx.models(self)
        load: dict[str, float] = {}
        saturated = None
        body = await ctx.get_optional(f"{ctx.origin}/metrics")
        if body is not None:
            load, saturated = vllm_load(body.decode("utf-8", "replace"))
        return self.up(ctx, served, load, saturated)


ADAPTER = VllmAdapter()
