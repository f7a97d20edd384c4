"""Any OpenAI-compatible cloud: `GET /v1/models` with the key, probed sparingly.

Listing models costs no tokens and proves both reachability and that the api_key is accepted.
"""

from __future__ import annotations

from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.config.schema import ClientApi
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "OpenAIAdapter"]


class OpenAIAdapter(BackendAdapter):
    kind = "openai"
    probe_paths = ("/v1/models",)
    min_probe_interval = 300.0
    # As api.openai.com documents itself. A compatible cloud that serves less (chat completions only,
    # say) says so with `apis: []` in the fabric file, and the gateway translates for it.
    native_apis = frozenset({ClientApi.RESPONSES, ClientApi.INPUT_TOKENS, ClientApi.TRANSCRIPTION})

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        return self.up(ctx, await ctx.models(self))


ADAPTER = OpenAIAdapter()
