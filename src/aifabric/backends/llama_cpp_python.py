"""llama-cpp-python's server: no `/health`, so `GET /v1/models` is the probe.

It loads the model before it listens (connection refused while loading: "down" until it answers),
answers a request naming an unknown model with the loaded one (no 404), and does not support
`stream_options.include_usage`.
"""

from __future__ import annotations

from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "LlamaCppPythonAdapter"]


class LlamaCppPythonAdapter(BackendAdapter):
    kind = "llama-cpp-python"
    probe_paths = ("/v1/models",)
    supports_include_usage = False
    enforces_model_id = False
    accepts_request_id = False  # a non-UUID X-Request-ID is a 400 there

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        return self.up(ctx, await ctx.models(self))


ADAPTER = LlamaCppPythonAdapter()
