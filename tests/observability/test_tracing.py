"""OpenTelemetry traces: one span per request and one per attempt with the GenAI conventions, the
client's traceparent continued and each attempt's sent to its backend, exported over OTLP/HTTP to a
local receiver; nothing of OpenTelemetry imported when tracing is off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from otlp_receiver import OtlpReceiver

from aifabric.config.load import load_config_text
from aifabric.observability.tracing import provider_name
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT, ERROR = 2, 3, 2

FABRIC = """
backends:
  a: {{kind: vllm, url: "{a}"}}
  b: {{kind: vllm, url: "{b}"}}
roles:
  chat: {{kind: chat, targets: [{{backend: a, model: m1}}], fallbacks: [backup]}}
  backup: {{kind: chat, targets: [{{backend: b, model: m2}}]}}
tracing: {{endpoint: "{otlp}", service_name: gw-test}}
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


def test_request_and_attempt_spans_with_genai_attributes(receiver: OtlpReceiver) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as a, FakeBackend(kind="vllm", models=("m2",)) as b:
        a.set(fail_first_n=1, fail_status=500)
        config = load_config_text(
            FABRIC.format(a=a.url, b=b.url, otlp=receiver.endpoint), "f.yaml", environ={}
        )
        gw = RunningGateway(config).start()
        try:
            client = gw.openai()
            traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
            answer = client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=5,
                temperature=0.5,
                extra_headers={"traceparent": traceparent},
            )
            assert answer.usage is not None
            stream = client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "stream please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
            assert chunks[-1].usage is not None
        finally:
            gw.stop()  # flushes the exporter
        assert receiver.content_types and all(t == "application/x-protobuf" for t in receiver.content_types)

        spans = receiver.spans
        requests = [s for s in spans if s.kind == SERVER]
        assert len(requests) == 2
        first = next(s for s in requests if s.trace_id == CLIENT_TRACE)
        # The client's trace continued: same trace id, the client's span as parent.
        assert first.parent_span_id == CLIENT_SPAN
        assert first.name == "chat chat" and first.service == "gw-test"
        attrs = first.attributes
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == "chat"
        assert attrs["gen_ai.response.model"] == "m2"
        assert attrs["gen_ai.request.max_tokens"] == 5 and attrs["gen_ai.request.temperature"] == 0.5
        assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
        assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
        assert attrs["aifabric.attempts"] == 2 and attrs["aifabric.backend"] == "b"
        assert attrs["http.response.status_code"] == 200
        assert attrs["gen_ai.provider.name"] == "vllm"  # the backend that served: b

        # One span per attempt, children of the request span: a failed with the failure class, then b.
        attempts = sorted((s for s in spans if s.parent_span_id == first.span_id), key=lambda s: s.name)
        assert [(s.kind, s.name, s.attributes["aifabric.backend"]) for s in attempts] == [
            (CLIENT, "chat m1", "a"),
            (CLIENT, "chat m2", "b"),
        ]
        failed, served = attempts
        assert failed.attributes["error.type"] == "upstream_5xx" and failed.status_code == ERROR
        assert failed.attributes["http.response.status_code"] == 500
        assert served.attributes["gen_ai.request.model"] == "m2" and "error.type" not in served.attributes
        assert served.attributes["gen_ai.response.model"] == "m2"  # as the answer's body says
        for span, backend in ((failed, a), (served, b)):
            assert span.attributes["gen_ai.provider.name"] == "vllm"
            assert span.attributes["server.address"] == "127.0.0.1"
            assert span.attributes["server.port"] == backend.port

        # Each backend got its own attempt's traceparent: its work joins the same trace.
        sent_a = a.requests[0].headers["traceparent"]
        sent_b = next(r for r in b.requests if r.path.endswith("/chat/completions")).headers["traceparent"]
        assert sent_a == f"00-{CLIENT_TRACE}-{failed.span_id}-01"
        assert sent_b == f"00-{CLIENT_TRACE}-{served.span_id}-01"

        # The stream's span: its own trace (no traceparent), ended with the stream, usage from its last event.
        streamed = next(s for s in requests if s is not first)
        assert streamed.trace_id != CLIENT_TRACE and streamed.parent_span_id == ""
        assert streamed.attributes["aifabric.stream"] is True
        assert streamed.attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens  # type: ignore[union-attr]


def test_an_unknown_model_is_an_error_span(receiver: OtlpReceiver) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as a:
        config = load_config_text(
            FABRIC.format(a=a.url, b=a.url, otlp=receiver.endpoint), "f.yaml", environ={}
        )
        gw = RunningGateway(config).start()
        try:
            import openai

            with pytest.raises(openai.NotFoundError):
                gw.openai().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        finally:
            gw.stop()
        (span,) = receiver.spans
        assert span.name == "chat nope" and span.status_code == ERROR
        assert span.attributes["http.response.status_code"] == 404
        assert span.attributes["error.type"] == "model_not_found"


@pytest.mark.parametrize("status", [400, 401, 500])
def test_a_backend_error_quoting_its_key_is_never_exported(receiver: OtlpReceiver, status: int) -> None:
    key = "sk-backend-7f3a9c2e1d"
    quoted = {"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error"}}
    with FakeBackend(kind="openai", models=("m1",)) as a:
        a.set(status_override=status, fail_body=quoted)
        fabric = f"""
backends:
  a: {{kind: openai, url: "{a.url}", api_key: "{key}"}}
roles:
  chat: {{kind: chat, targets: [{{backend: a, model: m1}}]}}
retry: {{max_attempts: 1}}
tracing: {{endpoint: "{receiver.endpoint}", service_name: gw-test}}
"""
        gw = RunningGateway(load_config_text(fabric, "f.yaml", environ={})).start()
        try:
            import openai

            with pytest.raises(openai.APIStatusError) as raised:
                gw.openai().chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
        finally:
            gw.stop()
    assert key not in str(raised.value.body)
    request = next(s for s in receiver.spans if s.kind == SERVER)
    assert request.status_code == ERROR
    assert receiver.bodies and not any(key.encode() in body for body in receiver.bodies)
    if status != 401:  # the backend's words are passed on, its key masked
        assert "Incorrect API key provided: ********" in request.status_message


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    code = """
import sys
from aifabric.config.load import load_config_text
from aifabric.gateway.app import Gateway
text = ('backends: {a: {kind: vllm, url: "http://127.0.0.1:9/v1"}}\\n'
        'roles: {chat: {kind: chat, targets: [{backend: a, model: m}]}}\\n')
gw = Gateway(load_config_text(text), probe=False)
assert gw.tracer is None and gw.forwarder._on_attempt_start is None
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_anthropic_messages_are_chat_spans_with_their_usage(receiver: OtlpReceiver) -> None:
    import anthropic

    with FakeBackend(kind="vllm", models=("m1",)) as a:
        config = load_config_text(
            FABRIC.format(a=a.url, b=a.url, otlp=receiver.endpoint), "f.yaml", environ={}
        )
        gw = RunningGateway(config).start()
        try:
            with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0) as client:
                message = client.messages.create(
                    model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            gw.stop()
    (request,) = [s for s in receiver.spans if s.kind == SERVER]
    assert request.name == "chat chat"
    assert request.attributes["gen_ai.request.model"] == "chat"
    assert request.attributes["gen_ai.request.max_tokens"] == 8
    assert request.attributes["gen_ai.usage.input_tokens"] == message.usage.input_tokens
    assert request.attributes["gen_ai.usage.output_tokens"] == message.usage.output_tokens
    (attempt,) = [s for s in receiver.spans if s.parent_span_id == request.span_id]
    assert attempt.kind == CLIENT and attempt.attributes["aifabric.backend"] == "a"


def test_responses_api_streams_are_chat_spans_with_their_usage(receiver: OtlpReceiver) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as a:
        config = load_config_text(
            FABRIC.format(a=a.url, b=a.url, otlp=receiver.endpoint), "f.yaml", environ={}
        )
        gw = RunningGateway(config).start()
        try:
            client = gw.openai()
            events = list(client.responses.create(model="chat", input="hi", stream=True))
        finally:
            gw.stop()
    completed = next(e for e in events if e.type == "response.completed")
    usage = completed.response.usage  # type: ignore[union-attr]
    assert usage is not None
    (request,) = [s for s in receiver.spans if s.kind == SERVER]
    assert request.name == "chat chat" and request.attributes["aifabric.stream"] is True
    assert request.attributes["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert request.attributes["gen_ai.usage.output_tokens"] == usage.output_tokens


def test_the_response_model_is_what_the_backend_answered(receiver: OtlpReceiver) -> None:
    """A llama-server answers with the model it has loaded whatever the request asked: the attempt's
    gen_ai.response.model says so when the answer is JSON; a stream's is the target's model id."""
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    with (
        FakeBackend(kind="llamacpp", models=(gguf,)) as a,
        FakeBackend(kind="openai", models=("gpt-4o-mini",)) as b,
    ):
        config = load_config_text(
            f"""
backends:
  box: {{kind: llamacpp, url: "{a.url}"}}
  cloud: {{kind: openai, url: "{b.url}"}}
roles:
  small: {{kind: chat, targets: [{{backend: box, model: smol}}]}}
  strong: {{kind: chat, targets: [{{backend: cloud, model: gpt-4o-mini}}]}}
tracing: {{endpoint: "{receiver.endpoint}"}}
""",
            "f.yaml",
            environ={},
        )
        gw = RunningGateway(config).start()
        try:
            client = gw.openai()
            messages = [{"role": "user", "content": "hi"}]
            answer = client.chat.completions.create(model="small", messages=messages)  # type: ignore[arg-type]
            assert answer.model == gguf
            assert list(client.chat.completions.create(model="small", messages=messages, stream=True))  # type: ignore[arg-type]
            client.chat.completions.create(model="strong", messages=messages)  # type: ignore[arg-type]
        finally:
            gw.stop()
    requests = {s.span_id: s for s in receiver.spans if s.kind == SERVER}
    attempts = [s for s in receiver.spans if s.kind == CLIENT]
    assert len(requests) == 3 and len(attempts) == 3
    by_kind = {}
    for attempt in attempts:
        request = requests[attempt.parent_span_id]
        by_kind[(attempt.attributes["aifabric.backend"], "aifabric.stream" in request.attributes)] = (
            request,
            attempt,
        )
    request, attempt = by_kind[("box", False)]
    assert attempt.attributes["gen_ai.request.model"] == "smol"
    assert attempt.attributes["gen_ai.response.model"] == gguf
    assert request.attributes["gen_ai.response.model"] == gguf
    assert (
        attempt.attributes["gen_ai.provider.name"] == request.attributes["gen_ai.provider.name"] == "llamacpp"
    )
    assert (attempt.attributes["server.address"], attempt.attributes["server.port"]) == ("127.0.0.1", a.port)
    _, streamed = by_kind[("box", True)]
    assert streamed.attributes["gen_ai.response.model"] == "smol"  # the configured model id
    request, attempt = by_kind[("cloud", False)]
    assert (
        attempt.attributes["gen_ai.provider.name"] == request.attributes["gen_ai.provider.name"] == "openai"
    )
    assert attempt.attributes["gen_ai.response.model"] == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("kind", "url", "provider"),
    [
        ("openai", "https://api.openai.com/v1", "openai"),
        ("openai", "https://my-estate.openai.azure.com/openai/v1", "azure.ai.openai"),
        ("openai", "https://my-hub.services.ai.azure.com/models", "azure.ai.inference"),
        ("openai", "https://api.mistral.ai/v1", "mistral_ai"),
        ("openai", "https://generativelanguage.googleapis.com/v1beta/openai", "gcp.gemini"),
        ("openai", "http://10.0.0.7:8000/v1", "openai"),  # any other OpenAI-compatible API
        ("openai", "https://notapi.mistral.ai.example.com/v1", "openai"),
        ("vllm", "http://motoko:8000/v1", "vllm"),
        ("ollama", "http://127.0.0.1:11434/v1", "ollama"),
    ],
)
def test_provider_names_follow_the_genai_registry(kind: str, url: str, provider: str) -> None:
    assert provider_name(kind, url) == provider


def test_a_missing_native_route_is_its_own_span_and_the_translated_retry_another(
    receiver: OtlpReceiver,
) -> None:
    # An older vLLM without /v1/messages: the 404 attempt's span ends as such, the retry has its own.
    with FakeBackend(kind="vllm", models=("m1",), routes=()) as a:
        config = load_config_text(
            FABRIC.format(a=a.url, b=a.url, otlp=receiver.endpoint), "f.yaml", environ={}
        )
        gw = RunningGateway(config).start()
        try:
            import anthropic

            with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0) as client:
                client.messages.create(
                    model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            gw.stop()
    (request,) = [s for s in receiver.spans if s.kind == SERVER]
    attempts = {
        s.attributes["http.response.status_code"]: s
        for s in receiver.spans
        if s.parent_span_id == request.span_id
    }
    assert sorted(attempts) == [200, 404]
    missing, translated = attempts[404], attempts[200]
    assert missing.status_code != ERROR  # no failure of the backend's
    assert missing.attributes["aifabric.attempt.outcome"] == "route_missing"
    assert "aifabric.attempt.outcome" not in translated.attributes
