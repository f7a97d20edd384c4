"""What a backend serves natively when `apis:` does not say (per kind; per URL for `openai`), and how
an error answer of a native route tells "no such route" from "no such model"."""

from __future__ import annotations

import pytest

from aifabric.backends._errors import route_missing
from aifabric.backends.base import adapter_for
from aifabric.backends.openai import openai_native_apis
from aifabric.config.schema import BackendConfig, ClientApi
from aifabric.routing.table import Endpoint

R, N, T = ClientApi.RESPONSES, ClientApi.INPUT_TOKENS, ClientApi.TRANSCRIPTION


@pytest.mark.parametrize(
    ("url", "native"),
    [
        ("https://api.openai.com/v1", {R, N, T}),
        ("https://API.OpenAI.com:443/v1/", {R, N, T}),
        ("https://my-res.openai.azure.com/openai/v1", {R, T}),
        ("https://my-res.cognitiveservices.azure.com/openai/v1/", {R, T}),
        ("https://my-proj.services.ai.azure.com/openai/v1", {R, T}),
        ("https://my-res.openai.azure.com/openai/deployments/gpt-4o", set()),  # not the v1 API
        ("https://api.deepseek.com/v1", set()),
        ("https://api.mistral.ai/v1", set()),
        ("https://api.groq.com/openai/v1", set()),
        ("https://api.together.xyz/v1", set()),
        ("https://openrouter.ai/api/v1", set()),
        ("https://api.openai.com.evil.example/v1", set()),
        ("http://127.0.0.1:8000/v1", set()),  # a vLLM or LM Studio declared as `openai`
    ],
)
def test_the_openai_kinds_native_set_follows_its_url(url: str, native: set[ClientApi]) -> None:
    assert openai_native_apis(url) == native
    endpoint = Endpoint.from_config(BackendConfig(name="c", kind="openai", url=url))
    assert endpoint.native == native
    assert endpoint.serves_natively(R, stream=True) is (R in native)


def test_apis_replaces_the_rule_either_way() -> None:
    declared = BackendConfig(name="c", kind="openai", url="http://10.0.0.5/v1", apis=(ClientApi.MESSAGES,))
    assert Endpoint.from_config(declared).native == {ClientApi.MESSAGES}
    none = BackendConfig(name="o", kind="openai", url="https://api.openai.com/v1", apis=())
    assert Endpoint.from_config(none).native == set()


def test_other_kinds_keep_their_set_whatever_the_url() -> None:
    for kind in ("vllm", "llamacpp", "ollama", "tei"):
        backend = BackendConfig(name="b", kind=kind, url="https://api.openai.com/v1")
        assert adapter_for(kind).native_apis_for(backend) == adapter_for(kind).native_apis


@pytest.mark.parametrize(
    ("status", "body", "missing"),
    [
        # "No such route", as real servers say it
        (404, b'{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}', True),
        (404, b'{"detail":"Not Found"}', True),  # FastAPI (vLLM, llama-cpp-python)
        (
            404,
            b'{"error":{"message":"Invalid URL (POST /v1/responses)","type":"invalid_request_error",'
            b'"param":null,"code":null}}',
            True,
        ),  # OpenAI-style clouds
        (404, b"404 page not found", True),  # Go (Ollama before its /v1/responses)
        (404, b"", True),  # axum (TEI), many proxies
        (404, b"<html><body><h1>404 Not Found</h1>nginx</body></html>", True),
        (405, b'{"detail":"Method Not Allowed"}', True),
        (405, b"", True),
        # "No such model": the route is there
        (
            404,
            b'{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","code":404}}',
            False,
        ),
        (404, b'{"error":{"message":"model \\"x\\" not found, try pulling it first"}}', False),
        (
            404,
            b'{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.",'
            b'"type":"invalid_request_error","param":null,"code":"model_not_found"}}',
            False,
        ),
        # Anything else is no route verdict at all
        (400, b'{"detail":"Not Found"}', False),
        (500, b"", False),
        (503, b"Loading model", False),
    ],
)
def test_route_missing_tells_a_missing_route_from_a_missing_model(
    status: int, body: bytes, missing: bool
) -> None:
    assert route_missing(status, body) is missing
    assert adapter_for("openai").route_missing(status, body) is missing
