"""Rerank (`POST /v1/rerank`, `/rerank`) and score (`POST /v1/score`) on roles of kind `rerank`, one
answer shape whatever the backend.

Every rerank backend serves it natively, each in its own dialect:

    vLLM, llama-server   POST /v1/rerank {"model", "query", "documents", "top_n"}
                         -> {"results": [{"index", "relevance_score", "document"?}], "usage"?}
    TEI                  POST /rerank {"query", "texts"} -> [{"index", "score"}]

The client sends the Jina/Cohere-style request above (`documents` as strings or `{"text"}` objects,
`top_n`, `return_documents`) and always gets
`{"id", "object": "rerank", "model", "results": [{"index", "relevance_score", "document": {"text"}}],
"usage": {"prompt_tokens", "total_tokens"}}`, best first, cut to `top_n`, documents echoed unless
`return_documents` is false. `/v1/score` takes vLLM's `{"text_1", "text_2"}` and answers vLLM's
`{"object": "list", "data": [{"index", "object": "score", "score"}]}` in document order, on any
rerank backend (it is a rerank of `text_2` against `text_1`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from aifabric.config.schema import ClientApi
from aifabric.core import FailureClass
from aifabric.errors import BadRequest, UpstreamFailure
from aifabric.gateway.dialects.base import BodyLike, Dialect

if TYPE_CHECKING:
    from aifabric.routing.table import Endpoint

__all__ = ["RerankDialect", "RerankRequest", "normalize_rerank", "parse_rerank", "parse_score"]


class RerankRequest:
    """A rerank asked for, read once: the query, the documents' texts, what the answer should hold."""

    __slots__ = ("documents", "model", "query", "return_documents", "top_n")

    def __init__(
        self, model: Any, query: str, documents: list[str], top_n: int | None, return_documents: bool
    ) -> None:
        self.model = model
        self.query = query
        self.documents = documents
        self.top_n = top_n
        self.return_documents = return_documents


def _texts(value: Any, param: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest(f"`{param}` must be a non-empty list of strings.", param=param)
    texts = []
    for entry in value:
        item = entry["text"] if isinstance(entry, dict) and isinstance(entry.get("text"), str) else entry
        if not isinstance(item, str):
            raise BadRequest(f'each of `{param}` must be a string or {{"text": ...}}.', param=param)
        texts.append(item)
    return texts


def parse_rerank(payload: dict[str, Any]) -> RerankRequest:
    query = payload.get("query")
    if not isinstance(query, str) or not query:
        raise BadRequest("`query` must be a non-empty string.", param="query")
    top_n = payload.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise BadRequest("`top_n` must be a positive integer.", param="top_n")
    return_documents = payload.get("return_documents") is not False
    return RerankRequest(
        payload.get("model"), query, _texts(payload.get("documents"), "documents"), top_n, return_documents
    )


def parse_score(payload: dict[str, Any]) -> RerankRequest:
    text_1 = payload.get("text_1")
    if not isinstance(text_1, str):
        raise BadRequest(
            "`text_1` must be a string (the query the others are scored against).", param="text_1"
        )
    return RerankRequest(payload.get("model"), text_1, _texts(payload.get("text_2"), "text_2"), None, False)


def _results(doc: Any) -> list[tuple[int, float]]:
    """(index, score) pairs from any backend's rerank answer."""
    rows = doc.get("results", doc.get("data")) if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise UpstreamFailure(FailureClass.UPSTREAM_5XX, "the backend's rerank answer has no results")
    out = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("index"), int):
            continue
        score = row.get("relevance_score", row.get("score"))
        if isinstance(score, int | float) and not isinstance(score, bool):
            out.append((row["index"], float(score)))
    return out


def normalize_rerank(doc: Any, request: RerankRequest, model: str) -> dict[str, Any]:
    """The one rerank answer shape, from a backend's answer (`doc`) to `request`."""
    pairs = [(i, s) for i, s in _results(doc) if 0 <= i < len(request.documents)]
    pairs.sort(key=lambda pair: -pair[1])
    if request.top_n is not None:
        pairs = pairs[: request.top_n]
    results: list[dict[str, Any]] = []
    for index, score in pairs:
        row: dict[str, Any] = {"index": index, "relevance_score": score}
        if request.return_documents:
            row["document"] = {"text": request.documents[index]}
        results.append(row)
    head: dict[str, Any] = doc if isinstance(doc, dict) else {}
    raw_usage = head.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    tokens = usage.get("prompt_tokens", usage.get("total_tokens"))
    answer: dict[str, Any] = {
        "id": str(head.get("id") or f"rerank-{os.urandom(8).hex()}"),
        "object": "rerank",
        "model": model,
        "results": results,
    }
    if isinstance(tokens, int):
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": usage.get("total_tokens", tokens)}
    return answer


def score_answer(rerank: dict[str, Any]) -> dict[str, Any]:
    """vLLM's /score shape from the normalized rerank answer: document order, one score each."""
    rows = sorted(rerank["results"], key=lambda r: r["index"])
    answer: dict[str, Any] = {
        "id": rerank["id"],
        "object": "list",
        "model": rerank["model"],
        "data": [{"index": r["index"], "object": "score", "score": r["relevance_score"]} for r in rows],
    }
    if "usage" in rerank:
        answer["usage"] = rerank["usage"]
    return answer


class RerankDialect(Dialect):
    """One per request: it carries the parsed request, which the native answer is normalized against."""

    api: ClassVar[ClientApi] = ClientApi.RERANK
    native_path: ClassVar[str] = "/rerank"

    def __init__(self, request: RerankRequest, *, score: bool = False) -> None:
        self.request = request
        self.score = score

    def native_request(self, endpoint: Endpoint, body: BodyLike, model: str) -> tuple[str, bytes]:
        req = self.request
        own = endpoint.adapter.rerank_path
        if own is not None:  # TEI: its own route at the origin, its own field names
            return endpoint.beside_api(own), orjson.dumps({"query": req.query, "texts": req.documents})
        sent: dict[str, Any] = {"model": model, "query": req.query, "documents": req.documents}
        if req.top_n is not None:
            sent["top_n"] = req.top_n
        return endpoint.prefix + self.native_path, orjson.dumps(sent)

    def native_answer(self, endpoint: Endpoint, data: bytes, model: str) -> bytes:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                FailureClass.UPSTREAM_5XX, "the backend's rerank answer is not JSON"
            ) from None
        answer = normalize_rerank(doc, self.request, model)
        return orjson.dumps(score_answer(answer) if self.score else answer)
