"""`aifabric smoke` against a real gateway on fake backends: what passes, what fails and why."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.testing.fake_backend import FakeBackend

Start = Callable[..., Any]


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


def fabric(chat_url: str, embed_url: str) -> str:
    return f"""
gateway: {{api_keys: ["sk-smoke-key"]}}
backends:
  chat: {{kind: vllm, url: "{chat_url}"}}
  embed: {{kind: vllm, url: "{embed_url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: chat, model: m1}}]}}
  embeddings-general: {{kind: embeddings, targets: [{{backend: embed, model: e1}}]}}
aliases:
  local/chat: chat-fast
"""


def test_smoke_passes_every_role_and_alias(start_gateway: Start) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as chat, FakeBackend(kind="vllm", models=("e1",)) as embed:
        gw = start_gateway(fabric(chat.url, embed.url))
        code, text = run_cli("smoke", "--url", gw.url, "--api-key", "sk-smoke-key")
        assert code == 0, text
        assert "PASS  local/chat" in text and "PASS  embeddings-general" in text
        assert "via chat-fast/chat" in text
        code, text = run_cli("smoke", "--url", gw.url, "--api-key", "sk-smoke-key", "--json")
        report = json.loads(text)
        assert report["ok"] is True
        assert {c["name"] for c in report["checks"]} == {
            "/v1/models",
            "chat-fast",
            "embeddings-general",
            "local/chat",
        }


def test_smoke_fails_and_says_why(start_gateway: Start) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as chat, FakeBackend(kind="vllm", models=("e1",)) as embed:
        embed.set(status_override=500)
        gw = start_gateway(fabric(chat.url, embed.url))
        code, text = run_cli("smoke", "--url", gw.url, "--api-key", "sk-smoke-key", "--timeout", "10")
        assert code == 1
        assert "FAIL  embeddings-general" in text and "HTTP 500" in text
        assert "PASS  chat-fast" in text
        code, text = run_cli("smoke", "--url", gw.url)  # no key
        assert code == 1 and "HTTP 401" in text


def test_smoke_reports_an_unreachable_gateway() -> None:
    from aifabric.testing.net import free_port

    code, text = run_cli("smoke", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "gateway unreachable" in text


def test_smoke_gives_up_on_a_gateway_that_stalls_mid_body() -> None:
    import socket
    import threading

    # A "gateway" that sends its headers and half a body, then nothing.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        conn.recv(65536)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"data":')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        code, text = run_cli("smoke", "--url", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    finally:
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert code == 1
    assert "no complete answer within 0.5s" in text


def test_smoke_checks_rerank_and_transcription_roles_on_their_routes(start_gateway: Start) -> None:
    with (
        FakeBackend(kind="tei", models=("rr",)) as tei,
        FakeBackend(kind="vllm", models=("whisper",)) as audio,
    ):
        gw = start_gateway(f"""
backends:
  tei: {{kind: tei, url: "{tei.url}"}}
  audio: {{kind: vllm, url: "{audio.url}"}}
roles:
  rerank-general: {{kind: rerank, targets: [{{backend: tei, model: rr}}]}}
  speech: {{kind: transcription, targets: [{{backend: audio, model: whisper}}]}}
""")
        code, text = run_cli("smoke", "--url", gw.url, "--json")
        report = json.loads(text)
        assert code == 0, text
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["rerank-general"]["detail"] == "2 documents ranked"
        assert checks["speech"]["ok"] is True
        assert tei.requests[-1].path == "/rerank"
        assert audio.requests[-1].path == "/v1/audio/transcriptions"
        tei.set(status_override=500)
        code, text = run_cli("smoke", "--url", gw.url, "--json")
        assert code != 0
        assert json.loads(text)["checks"][1]["ok"] is False
