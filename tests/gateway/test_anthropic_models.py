"""`GET /v1/models` in Anthropic's shape for Anthropic's clients (`anthropic-version`), with the official
`anthropic` SDK; OpenAI's clients keep OpenAI's list."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import ModelInfo

from aifabric.testing.fake_backend import FakeBackend

KEY = "gw-key-51c0"
Start = Callable[..., Any]
CHAT_MODELS = ["alpha", "beta", "gamma", "delta", "a/alpha"]  # the chat roles, then the alias


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    backend = FakeBackend(kind="vllm", models=("m",)).start()
    yield backend
    backend.stop()


@pytest.fixture
def gw(start_gateway: Start, fake: FakeBackend) -> Any:
    chat = ", ".join(
        f"{name}: {{kind: chat, targets: [{{backend: b, model: m}}]}}" for name in CHAT_MODELS[:4]
    )
    return start_gateway(
        f"""
gateway: {{api_keys: ["{KEY}"]}}
backends:
  b: {{kind: vllm, url: "{fake.url}"}}
roles: {{{chat}, vectors: {{kind: embeddings, targets: [{{backend: b, model: m}}]}}}}
aliases: {{a/alpha: alpha, v/vectors: vectors}}
"""
    )


@pytest.fixture
def client(gw: Any) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        yield c


def test_the_sdk_lists_the_chat_models_in_anthropics_shape(gw: Any, client: anthropic.Anthropic) -> None:
    page = client.models.list()
    assert [m.id for m in page.data] == CHAT_MODELS  # what /v1/messages serves: no embeddings role
    assert (page.has_more, page.first_id, page.last_id) == (False, "alpha", "a/alpha")
    assert page.data[0].display_name == "alpha"
    assert page.data[-1].display_name == "a/alpha (alias of alpha)"
    raw = httpx.get(
        gw.url + "/v1/models", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}, timeout=10
    ).json()
    assert set(raw) == {"data", "has_more", "first_id", "last_id"}
    for entry in raw["data"]:
        assert set(entry) == {"type", "id", "display_name", "created_at", "lifecycle"}
        info = ModelInfo.model_validate(entry)  # validated, not just constructed as the SDK does
        assert info.type == "model"
        assert info.created_at.tzinfo is not None
        assert abs(info.created_at - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(hours=1)


def test_pages_follow_anthropics_cursors(client: anthropic.Anthropic) -> None:
    first = client.models.list(limit=2)
    assert [m.id for m in first.data] == ["alpha", "beta"]
    assert (first.has_more, first.last_id) == (True, "beta")
    assert [m.id for m in client.models.list(limit=2)] == CHAT_MODELS  # the SDK pages through after_id
    after = client.models.list(limit=2, after_id="beta")
    assert [m.id for m in after.data] == ["gamma", "delta"] and after.has_more
    before = client.models.list(limit=2, before_id="delta")
    assert [m.id for m in before.data] == ["beta", "gamma"] and before.has_more
    assert [m.id for m in client.models.list(before_id="beta").data] == ["alpha"]
    last = client.models.list(after_id="a/alpha")
    assert (last.data, last.has_more, last.first_id, last.last_id) == ([], False, None, None)


def test_retrieve_one_model(client: anthropic.Anthropic) -> None:
    info = client.models.retrieve("a/alpha")  # the SDK percent-encodes the slash
    assert (info.id, info.type, info.display_name) == ("a/alpha", "model", "a/alpha (alias of alpha)")
    for missing in ("nope", "vectors"):  # an embeddings role is no model of Anthropic's API
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.models.retrieve(missing)
        assert caught.value.body["type"] == "error"  # type: ignore[index]
        assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        assert missing in caught.value.message


@pytest.mark.parametrize(
    ("query", "param"), [("limit=0", "limit"), ("limit=x", "limit"), ("after_id=nope", "after_id")]
)
def test_bad_paging_is_a_400_in_anthropics_shape(gw: Any, query: str, param: str) -> None:
    resp = httpx.get(
        f"{gw.url}/v1/models?{query}",
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(f"{param}:")


def test_a_wrong_key_is_refused_in_anthropics_shape(gw: Any) -> None:
    with (
        anthropic.Anthropic(base_url=gw.url, api_key="wrong", max_retries=0) as stranger,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        stranger.models.list()
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "wrong" not in caught.value.message


def test_openai_clients_keep_openais_list(gw: Any) -> None:
    """Without `anthropic-version`, the list is OpenAI's, every role and alias (embeddings too)."""
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) as oa:
        models = oa.models.list()
        assert sorted(m.id for m in models) == sorted([*CHAT_MODELS, "vectors", "v/vectors"])
        assert oa.models.retrieve("vectors").id == "vectors"
    raw = httpx.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert raw["object"] == "list" and "has_more" not in raw
    refused = httpx.get(gw.url + "/v1/models", headers={"authorization": "Bearer wrong"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
