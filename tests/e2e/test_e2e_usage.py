"""Usage on the real local models of the embedded default (llama-server): a streamed chat reports, to the
client and in the ledger, the prompt tokens the server itself counts for the same prompt non-streamed
(its templated prompt: the gateway used to say 1 for a 31-token "hi"). llama-server streams its own
usage when asked (`stream_options.include_usage`, which the gateway asks for), so what this proves is
that those figures pass through and land in the ledger unestimated; the gateway's own counting with the
model's tokenizer (for rows without usage) is tested in tests/tenancy/test_local_tokens.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest
from e2e_support import Up

from aifabric.tenancy.ledger import UsageRow, default_ledger_path
from aifabric.tenancy.ledger.sqlite import SqliteLedger
from aifabric.testing.wait import wait_until

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(fabric: Up) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def ledger_row(request_id: str) -> UsageRow | None:
    # `aifabric up` inherits the suite's XDG_STATE_HOME (tests/conftest.py): its default ledger is there.
    path = default_ledger_path()
    if not path.exists():
        return None
    store = SqliteLedger(path)
    try:
        return next((r for r in store.rows() if r.request_id == request_id), None)
    finally:
        store.close()


def test_a_streamed_chat_reports_the_prompt_tokens_the_server_counts(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="chat-fast", messages=HI, max_tokens=3)  # type: ignore[arg-type]
    # The server counts the chat template's tokens too: far more than the one token of "hi" (the gateway
    # used to report 1 for a stream).
    assert plain.usage is not None and plain.usage.prompt_tokens > 5
    seen: list[int] = []
    request_id = ""

    def streamed_matches() -> bool:
        nonlocal request_id
        request_id = str(uuid.uuid4())
        chunks = list(
            client.chat.completions.create(
                model="chat-fast",
                messages=HI,  # type: ignore[arg-type]
                max_tokens=3,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-request-id": request_id},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        seen.append(usage.prompt_tokens)
        return usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]

    # (With engine llama-cpp-python the prompt of a stream is counted by the gateway, with the model's
    # tokenizer once it has loaded beside the gateway: until then it is estimated. Hence the wait.)
    wait_until(streamed_matches, f"the streamed prompt_tokens to be the server's (seen {seen})")
    wait_until(lambda: ledger_row(request_id) is not None, "the stream's row in the ledger")
    row = ledger_row(request_id)
    assert row is not None
    # llama-server streams its own usage: the ledger keeps the server's figures, not an estimate.
    assert row.tokens_in == plain.usage.prompt_tokens and not row.estimated
    assert row.status == 200
    assert (row.role, row.backend, row.key) == ("chat-fast", "local-chat-fast", "anonymous")
