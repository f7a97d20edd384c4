"""The seed's roles answer through the gateway, on the real local models, with the official client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from e2e_support import Up

from aifabric.local.ports import tcp_sockets

pytestmark = pytest.mark.e2e

ROLES = {"chat-fast", "chat-deep", "embeddings-general"}
ALIASES = {"local/chat", "local/reasoner", "local/embed"}


@pytest.fixture(scope="module")
def client(fabric: Up) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_models_lists_the_three_roles_and_the_three_aliases(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == ROLES | ALIASES


@pytest.mark.parametrize("model", ["chat-fast", "chat-deep", "local/chat", "local/reasoner"])
def test_chat_answers_with_text(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    text = reply.choices[0].message.content or ""
    assert text.strip(), reply
    assert "Paris" in text  # SmolLM2-135M-Instruct knows this one
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_chat_streams_text_chunk_by_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="chat-fast",
        messages=[{"role": "user", "content": "Say hello to the world."}],
        max_tokens=24,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1, pieces  # more than one chunk carried text
    assert "".join(pieces).strip()


@pytest.mark.parametrize("model", ["embeddings-general", "local/embed"])
def test_embeddings_of_paraphrases_are_closer_than_of_unrelated_sentences(
    client: openai.OpenAI, model: str
) -> None:
    texts = ["The new movie is awesome", "The new movie is so great", "A man is playing guitar"]
    result = client.embeddings.create(model=model, input=texts)
    v = np.array([d.embedding for d in result.data])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > 0.8 and v[0] @ v[2] < 0.3


def _tcp_peer_ports(pid: int) -> set[int]:
    """The remote ports of the TCP connections process `pid` holds (its fds' socket inodes)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return {s.remote_port for s in tcp_sockets() if s.inode in inodes}


def test_the_gateway_reaches_the_embeddings_server_on_its_unix_socket(
    fabric: Up, client: openai.OpenAI
) -> None:
    with urllib.request.urlopen(fabric.base_url + "/status", timeout=10) as resp:
        embed = json.loads(resp.read())["backends"]["local-embed"]
    path = embed["unix_socket"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # only this user may connect
    # The server answers there (and on its port, for clients that go to it straight).
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
    # A chat request and an embedding through the gateway, whose connections stay pooled a few
    # seconds: the one to llama-server is TCP to its port, the one to the embeddings server is not.
    client.chat.completions.create(
        model="chat-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    assert len(client.embeddings.create(model="embeddings-general", input="pooled").data[0].embedding) == 384
    peers = _tcp_peer_ports(fabric.proc.pid)
    ports = fabric.backend_ports()
    assert ports["local-chat-fast"] in peers
    assert ports["local-embed"] not in peers


def test_a_chat_role_refuses_an_embeddings_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="chat-fast", input="hi")


def test_status_without_url_asks_the_running_up(fabric: Up) -> None:
    # `up` recorded its URL (cli.running): a bare `aifabric status` finds it on its own port.
    env = {k: v for k, v in os.environ.items() if k != "AIFABRIC_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "aifabric", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.startswith(f"gateway http://127.0.0.1:{fabric.port}"), result.stdout + result.stderr
    assert result.returncode in (0, 1)  # reached: all up, or one backend still warming (not 3, unreachable)


def _sh(command: str) -> str:
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def test_the_runbook_manual_verification_commands_work_verbatim(fabric: Up) -> None:
    # The seed's three commands, character for character, with our port instead of 8000.
    port = str(fabric.port)
    models = _sh("curl -s http://127.0.0.1:8000/v1/models | jq -r '.data[].id'".replace("8000", port))
    assert set(models.split()) == ROLES | ALIASES

    chat = _sh(
        """curl -X POST http://127.0.0.1:8000/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -d '{"model":"chat-fast","messages":[{"role":"user","content":"hi"}],"max_tokens":10}'""".replace(
            "8000", port
        )
    )
    body = json.loads(chat)
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] <= 10

    embed = _sh(
        """curl -X POST http://127.0.0.1:8000/v1/embeddings \\
  -H "Content-Type: application/json" \\
  -d '{"model":"embeddings-general","input":"test"}'""".replace("8000", port)
    )
    assert len(json.loads(embed)["data"][0]["embedding"]) == 384


def test_up_printed_the_url_and_the_runbook_commands(fabric: Up) -> None:
    out = fabric.output
    assert f"aifabric is up: http://127.0.0.1:{fabric.port}/v1" in out
    assert f"curl -s http://127.0.0.1:{fabric.port}/v1/models | jq -r '.data[].id'" in out
    # On a port of its own (make up PORT=N), the live view must be asked there, not at :8000.
    assert f"aifabric status --url http://127.0.0.1:{fabric.port}" in out
    assert f"logs in {fabric.log_dir}" in out
    assert sorted(p.name for p in fabric.log_dir.iterdir()) == [
        "local-chat-deep.log",
        "local-chat-fast.log",
        "local-embed.log",
    ]
