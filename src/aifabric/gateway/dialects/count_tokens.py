"""Anthropic's `POST /v1/messages/count_tokens`: native where the backend counts, else its tokenizer,
else an estimate that says so.

    native    backends serving /v1/messages/count_tokens (llama-server; `apis: [count_tokens]`)
    tokenize  vLLM: its `POST /tokenize` with the translated chat messages applies the model's own
              chat template and tokenizer, so the count is exact: {"count": N} -> {"input_tokens": N}
    estimate  any other backend: about four characters a token over the translated request, answered
              by the gateway with `"estimated": true` in the body and `x-aifabric-token-count:
              estimated`, never passed off as a real count
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from aifabric.config.schema import ClientApi
from aifabric.core import FailureClass
from aifabric.errors import UpstreamFailure
from aifabric.gateway.dialects.base import BodyLike, Dialect
from aifabric.gateway.dialects.messages import to_chat

if TYPE_CHECKING:
    from aifabric.routing.table import Endpoint

__all__ = ["CountTokensDialect", "estimate_tokens", "tokenize_request"]


def estimate_tokens(chat: dict[str, Any]) -> int:
    """About four characters a token over everything the model would read, plus each message's markers."""
    chars = 0
    for message in chat.get("messages") or ():
        chars += 16  # the chat template's role markers
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
        for call in message.get("tool_calls") or ():
            chars += len(orjson.dumps(call))
    if chat.get("tools"):
        chars += len(orjson.dumps(chat["tools"]))
    return max(1, chars // 4)


def tokenize_request(endpoint: Endpoint, chat: dict[str, Any], model: str) -> tuple[str, bytes]:
    """The request that counts `chat` with the endpoint's tokenizer (`endpoint.tokenize_path`, set)."""
    path = endpoint.tokenize_path
    assert path is not None
    tokenize = {"model": model, "messages": chat["messages"], "add_generation_prompt": True}
    if chat.get("tools"):
        tokenize["tools"] = chat["tools"]
    return endpoint.beside_api(path), orjson.dumps(tokenize)


class CountTokensDialect(Dialect):
    api: ClassVar[ClientApi] = ClientApi.COUNT_TOKENS
    native_path: ClassVar[str] = "/messages/count_tokens"
    answers_locally: ClassVar[bool] = True

    def can_serve(self, endpoint: Endpoint, stream: bool) -> bool:
        return True

    @staticmethod
    def _tokenizes(endpoint: Endpoint) -> bool:
        return endpoint.tokenize_path is not None

    def native_route(self, endpoint: Endpoint, stream: bool) -> bool:
        return endpoint.serves_natively(self.api, stream) or self._tokenizes(endpoint)

    def native_request(self, endpoint: Endpoint, body: BodyLike, model: str) -> tuple[str, bytes]:
        if endpoint.serves_natively(self.api, False):
            return super().native_request(endpoint, body, model)
        return tokenize_request(endpoint, to_chat({**body.payload, "max_tokens": 1}), model)

    def native_answer(self, endpoint: Endpoint, data: bytes, model: str) -> bytes:
        if endpoint.serves_natively(self.api, False):
            return data
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        count = doc.get("count") if isinstance(doc, dict) else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise UpstreamFailure(FailureClass.UPSTREAM_5XX, "the backend's /tokenize answer has no count")
        return orjson.dumps({"input_tokens": count})

    def local_answer(self, payload: dict[str, Any]) -> tuple[bytes, list[tuple[str, str]]]:
        count = estimate_tokens(to_chat({**payload, "max_tokens": 1}))
        body = orjson.dumps({"input_tokens": count, "estimated": True})
        return body, [("x-aifabric-token-count", "estimated")]
