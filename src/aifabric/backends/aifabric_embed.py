"""aifabric's own local embeddings server: `/health` (503 while loading, 200 ready) and `/v1/models`."""

from __future__ import annotations

from aifabric.backends.base import BackendAdapter, ProbeContext, ProbeFailed
from aifabric.core import BackendState, FailureClass, ProbeResult

__all__ = ["ADAPTER", "AifabricEmbedAdapter"]


class AifabricEmbedAdapter(BackendAdapter):
    kind = "aifabric-embed"
    probe_paths = ("/health", "/v1/models")

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        status, headers, body = await ctx.get(f"{ctx.origin}/health")
        if status == 503:
            # Its only reason to answer 503 on /health is that the model is still loading.
            said = self.normalize_error(status, body)["message"]
            raise ProbeFailed(
                BackendState.LOADING,
                f"loading its model (GET /health answered 503: {said})",
                FailureClass.LOADING,
            )
        if not 200 <= status < 300:
            raise self.failed_probe(status, headers, body, "GET /health")
        return self.up(ctx, await ctx.models(self))


ADAPTER = AifabricEmbedAdapter()
