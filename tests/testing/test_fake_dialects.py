"""The fake backend's routes beyond the OpenAI three: served by the kinds that serve them, in their shapes."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from aifabric.testing.fake_backend import FakeBackend

HI = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize("kind", ["vllm", "llamacpp", "ollama"])
def test_native_messages_with_the_anthropic_sdk(kind: str) -> None:
    with (
        FakeBackend(kind=kind, models=("m",)) as fb,
        anthropic.Anthropic(base_url=fb.base_url, api_key="x") as c,
    ):
        message = c.messages.create(model="m", max_tokens=20, messages=HI)
        assert message.content[0].text == "[m] hello there"  # type: ignore[union-attr]
        with c.messages.stream(model="m", max_tokens=20, messages=HI) as stream:
            assert "".join(stream.text_stream) == "[m] hello there"


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("openai", "/v1/messages"),
        ("llama-cpp-python", "/v1/messages"),
        ("vllm", "/v1/messages/count_tokens"),
        ("tei", "/v1/rerank"),
        ("vllm", "/rerank"),
        ("ollama", "/v1/audio/transcriptions"),
    ],
)
def test_a_kind_that_lacks_a_route_answers_404(kind: str, path: str) -> None:
    with FakeBackend(kind=kind, models=("m",)) as fb:
        assert httpx.post(fb.base_url + path, json={"model": "m"}).status_code == 404


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("vllm", b'{"detail":"Not Found"}'),
        ("llamacpp", b'{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}'),
        ("ollama", b"404 page not found"),
        ("tei", b""),
    ],
)
def test_routes_makes_a_chat_only_server_with_its_kinds_unknown_route_answer(kind: str, body: bytes) -> None:
    with FakeBackend(kind=kind, models=("m",), routes=()) as fb:
        missing = httpx.post(fb.url + "/responses", json={"model": "m", "input": "hi"})
        assert (missing.status_code, missing.content) == (404, body)
        chat = httpx.post(fb.url + "/chat/completions", json={"model": "m", "messages": HI})
        assert chat.status_code == 200


def test_an_openai_clouds_unknown_url_is_not_a_model_not_found() -> None:
    with FakeBackend(kind="openai", models=("m",), routes=["/v1/responses"]) as fb:
        missing = httpx.post(fb.url + "/messages", json={"model": "m"})
        assert missing.json()["error"] == {
            "message": "Invalid URL (POST /v1/messages)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        assert httpx.post(fb.url + "/responses", json={"model": "m", "input": "x"}).status_code == 200
        fb.set(missing_route_status=405)
        refused = httpx.post(fb.url + "/messages", json={"model": "m"})
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET")


def test_routes_from_the_command_line() -> None:
    from aifabric.testing._fake_cli import build_parser

    argv = ["--routes", "/v1/rerank, /v1/messages", "--missing-route-status", "405"]
    args = vars(build_parser().parse_args(argv))
    switches = FakeBackend(routes=args["routes"], missing_route_status=args["missing_route_status"]).switches
    assert (switches.routes, switches.missing_route_status) == (("/v1/rerank", "/v1/messages"), 405)
    assert FakeBackend(routes="").switches.routes == ()
    with pytest.raises(ValueError, match="routes must be paths"):
        FakeBackend(routes=["v1/rerank"])


def test_faults_apply_to_the_new_routes() -> None:
    with FakeBackend(kind="llamacpp", models=("m",), fail_first_n=1, fail_status=503) as fb:
        body = {"model": "m", "messages": HI}
        assert httpx.post(fb.url + "/messages/count_tokens", json=body).status_code == 503
        assert httpx.post(fb.url + "/messages/count_tokens", json=body).json() == {"input_tokens": 2}


def test_rerank_shapes_per_kind() -> None:
    body = {"model": "m", "query": "cat", "documents": ["a cat", "a dog"]}
    with FakeBackend(kind="vllm", models=("m",)) as vllm, FakeBackend(kind="tei", models=("m",)) as tei:
        v = httpx.post(vllm.url + "/rerank", json=body).json()
        t = httpx.post(tei.base_url + "/rerank", json={"query": "cat", "texts": ["a cat", "a dog"]}).json()
    assert [r["index"] for r in v["results"]] == [0, 1]
    assert v["results"][0]["document"] == {"text": "a cat"}
    assert [(r["index"], r["score"]) for r in t] == [(r["index"], r["relevance_score"]) for r in v["results"]]


def test_tool_calls_on_chat_completions() -> None:
    with FakeBackend(kind="vllm", models=("m",)) as fb:
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        body = {"model": "m", "messages": HI, "tools": tools}
        answer = httpx.post(fb.url + "/chat/completions", json=body).json()["choices"][0]
        assert answer["finish_reason"] == "tool_calls"
        assert answer["message"]["tool_calls"][0]["function"] == {
            "name": "f",
            "arguments": '{"query": "hello there"}',
        }
        after = [*HI, answer["message"], {"role": "tool", "tool_call_id": "x", "content": "42"}]
        reply = httpx.post(fb.url + "/chat/completions", json={**body, "messages": after}).json()
        assert reply["choices"][0]["message"]["content"] == "[m] tool said: 42"


def _transcribe(fb: FakeBackend, **fields: str) -> httpx.Response:
    return httpx.post(
        fb.base_url + "/v1/audio/transcriptions",
        data={"model": "whisper", **fields},
        files={"file": ("a.wav", b"RIFF" + bytes(124), "audio/wav")},
    )


def test_transcription_as_llama_server_answers_it() -> None:
    # llama-server's tools/server: `to_json_oaicompat_asr` (nlohmann::json: keys sorted, compact) for
    # the unstreamed answer and the stream's last event, then `[DONE]`; JSON only.
    with FakeBackend(kind="llamacpp", models=("m",)) as fb:
        body = _transcribe(fb).content
        assert body == (
            b'{"text":"[whisper] 128 bytes of audio","type":"transcript.text.done","usage":{"input_tokens":2,'
            b'"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"total_tokens":7,"type":"tokens"}}'
        )
        events = _transcribe(fb, stream="true").text.split("\n\n")
        assert events[0] == 'data: {"delta":"[whisper]","type":"transcript.text.delta"}'
        assert events[-3] == "data: " + body.decode()
        assert events[-2:] == ["data: [DONE]", ""]
        refused = _transcribe(fb, response_format="text")
        assert refused.status_code == 400
        assert "Only 'json' response_format" in refused.text


def test_transcription_as_vllm_streams_it() -> None:
    # vLLM's transcription.chunk objects; a usage chunk (no choices) only when the form asks for it.
    with FakeBackend(kind="vllm", models=("m",)) as fb:
        plain = [e for e in _transcribe(fb, stream="true").text.split("\n\n") if e]
        assert plain[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in plain[:-1]]
        assert {c["object"] for c in chunks} == {"transcription.chunk"}
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert all("usage" not in c for c in chunks)
        counted = [
            e for e in _transcribe(fb, stream="true", stream_include_usage="true").text.split("\n\n") if e
        ]
        last = json.loads(counted[-2][6:])
        assert last["choices"] == []
        assert last["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
