"""Hugging Face text-embeddings-inference: `/health` and `/info` (its `model_id`).

TEI embeds with the one model it loaded whatever `model` a request names, and answers errors as a
flat {"error": "...", "error_type": "..."}; 424 means the model failed on that input.
"""

from __future__ import annotations

from collections.abc import Mapping

from aifabric.backends._errors import parse_json
from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.config.schema import ClientApi
from aifabric.core import FailureClass, ProbeResult

__all__ = ["ADAPTER", "TeiAdapter"]


class TeiAdapter(BackendAdapter):
    kind = "tei"
    probe_paths = ("/health", "/info")
    enforces_model_id = False
    # TEI reranks on its own route, `POST /rerank` {"query", "texts"}, answering [{"index", "score"}].
    native_apis = frozenset({ClientApi.RERANK})
    rerank_path = "/rerank"

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        await ctx.get_ok(f"{ctx.origin}/health", "GET /health", self)
        _, body = await ctx.get_ok(f"{ctx.origin}/info", "GET /info", self)
        info = parse_json(body)
        served: tuple[str, ...] = ()
        if isinstance(info, dict) and isinstance(info.get("model_id"), str):
            served = (info["model_id"],)
        return self.up(ctx, served)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> FailureClass:
        if status == 424:  # "Inference failed": the backend's fault, not the request's
            return FailureClass.UPSTREAM_5XX
        return super().classify(status, headers, body)


ADAPTER = TeiAdapter()
