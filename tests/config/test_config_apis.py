"""`apis:` of a backend: the client APIs it serves natively, checked by the loader, used by the table."""

from __future__ import annotations

from config_support import BASE, Problems, line_of

from aifabric.config.load import load_config_text
from aifabric.config.schema import ClientApi
from aifabric.routing.table import RoutingTable


def test_apis_default_to_the_kinds_set_and_can_be_replaced() -> None:
    text = BASE.replace(
        '  box-embed: {host: box, kind: tei, url: "http://box.example:8080/v1"}',
        '  box-embed: {host: box, kind: tei, url: "http://box.example:8080/v1"}\n'
        '  old-vllm: {kind: vllm, url: "http://old.example:8000/v1", apis: []}\n'
        '  cloud: {kind: openai, url: "https://cloud.example/v1", apis: [messages, count_tokens]}',
    )
    cfg = load_config_text(text, "fabric.yaml", environ={})
    assert cfg.backends["box-vllm"].apis is None
    assert cfg.backends["old-vllm"].apis == ()
    assert cfg.backends["cloud"].apis == (ClientApi.MESSAGES, ClientApi.COUNT_TOKENS)
    table = RoutingTable.build(cfg)
    vllm = table.endpoints["box-vllm"]
    assert vllm.serves_natively(ClientApi.MESSAGES, stream=True)
    assert vllm.serves_natively(ClientApi.RESPONSES, stream=False)
    assert not table.endpoints["old-vllm"].serves_natively(ClientApi.MESSAGES, stream=False)
    cloud = table.endpoints["cloud"]
    assert cloud.serves_natively(ClientApi.COUNT_TOKENS, stream=False)
    assert not cloud.serves_natively(ClientApi.RESPONSES, stream=False)  # the kind's default is replaced


def test_unknown_api_names_its_line_and_the_valid_ones(problems: Problems) -> None:
    text = BASE.replace(
        '  box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1"}',
        '  box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1", apis: [mesages]}',
    )
    (problem,) = problems(text)
    assert problem.line == line_of(text, "apis: [mesages]")
    assert "backends.box-vllm.apis[0] is 'mesages'" in problem.message
    assert problem.fix == "did you mean 'messages'?"


def test_apis_must_be_a_list(problems: Problems) -> None:
    text = BASE.replace(
        '  box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1"}',
        '  box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1", apis: messages}',
    )
    (problem,) = problems(text)
    assert problem.line == line_of(text, "apis: messages")
    assert "backends.box-vllm.apis must be a list" in problem.message


def test_rerank_and_transcription_role_kinds_load() -> None:
    text = BASE.replace("aliases:\n  local/chat: chat-fast\n", "") + (
        "  rerank-general:\n    kind: rerank\n    targets: [{backend: box-embed, model: bge-reranker}]\n"
        "  whisper:\n    kind: transcription\n    targets: [{backend: box-vllm, model: whisper}]\n"
    )
    cfg = load_config_text(text, "fabric.yaml", environ={})
    assert cfg.roles["rerank-general"].kind == "rerank"
    assert cfg.roles["whisper"].kind == "transcription"
