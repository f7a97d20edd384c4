"""The chat roles' context contract on the real engines of the embedded default.

`chat-deep` takes 8k tokens per request and `chat-fast` 2k. A prompt of ~3k tokens is answered by
`chat-deep`; `chat-fast` refuses it with OpenAI's 400 (`invalid_request_error`,
`context_length_exceeded`), the request's fault: it is not retried, and not failed over to `chat-deep`
(chat-fast's fallback, which would take it). Asserted with the official client, the gateway's
`/metrics` (what was attempted where) and the engine's own token count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest
from e2e_support import Up

pytestmark = pytest.mark.e2e

FAST, DEEP = "local-chat-fast", "local-chat-deep"
# ~25 tokens a line for SmolLM2's tokenizer: 120 lines are ~3k tokens, over chat-fast's 2048 and well
# inside chat-deep's 8192 (the test checks the engine's own count, not this estimate).
LONG_PROMPT = (
    "\n".join(
        f"Note {i}: the delivery van left the depot at {i % 12 + 1} o'clock with {i * 7 % 50 + 3} parcels."
        for i in range(120)
    )
    + "\n\nHow many notes are there? Answer with one number."
)
ATTEMPT = re.compile(
    r'^aifabric_upstream_attempts_total\{role="([^"]*)",backend="([^"]*)",outcome="([^"]*)"\} (\d+)$'
)


@pytest.fixture(scope="module")
def client(fabric: Up) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def attempts(fabric: Up) -> dict[tuple[str, str, str], int]:
    """(role, backend, outcome) -> attempts so far, from the gateway's /metrics."""
    text = httpx.get(fabric.base_url + "/metrics", timeout=30).raise_for_status().text
    return {(m[1], m[2], m[3]): int(m[4]) for m in map(ATTEMPT.match, text.splitlines()) if m is not None}


def grown(
    before: dict[tuple[str, str, str], int], after: dict[tuple[str, str, str], int]
) -> dict[tuple[str, str, str], int]:
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


def test_chat_deep_answers_a_prompt_over_chat_fasts_context(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="chat-deep",
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=8,
        temperature=0,
    )
    assert raw.headers["x-aifabric-backend"] == DEEP
    reply = raw.parse()
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None
    # The engine's own count: over chat-fast's 2k, inside chat-deep's 8k.
    assert 2048 < reply.usage.prompt_tokens < 8192 - 8, reply.usage


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_chat_fast_refuses_it_with_openais_400_and_no_failover(
    client: openai.OpenAI, fabric: Up, stream: bool
) -> None:
    before = attempts(fabric)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="chat-fast",
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=8,
            stream=stream,
        )
    error = refused.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error" and error.code == "context_length_exceeded", error.body
    assert "context size (2048 tokens)" in error.message  # llama-server's words: what the limit is
    assert error.response.headers.get("x-request-id"), error.response.headers
    # One attempt, at chat-fast's own backend: not retried there, not sent on to chat-deep.
    assert grown(before, attempts(fabric)) == {("chat-fast", FAST, "client_error"): 1}

    # The refusal said nothing about the backend's health: chat-fast still serves from it.
    answered = client.chat.completions.with_raw_response.create(
        model="chat-fast", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert answered.headers["x-aifabric-backend"] == FAST
