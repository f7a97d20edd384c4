"""A backend with `unix_socket:`: the gateway forwards, streams and probes through the socket (the url's
port is never listened on here, so nothing else could answer), and a socket that goes away is the
backend down, with a reason that names the socket."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

Start = Callable[..., Any]


def status(gw: Any) -> dict[str, Any]:
    with urllib.request.urlopen(gw.url + "/status", timeout=5) as resp:
        view: dict[str, Any] = json.loads(resp.read())
    return view


def fabric(url: str, socket_path: str) -> str:
    return f"""
backends:
  b1: {{kind: vllm, url: "{url}", unix_socket: "{socket_path}", health: {{interval: 0.5s}}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
"""


def test_requests_and_probes_go_through_the_socket(
    start_gateway: Start, backend: Callable[..., FakeBackend], tmp_path: Path
) -> None:
    path = str(tmp_path / "vllm.sock")
    fake = backend(unix_socket=path)
    gw = start_gateway(fabric(fake.url, path), probe=True)
    wait_until(lambda: status(gw)["backends"]["b1"]["state"] == "up", "b1 probed up through its socket")
    assert status(gw)["backends"]["b1"]["unix_socket"] == path  # /status says where it connects
    client = gw.openai()
    reply = client.chat.completions.create(model="chat-fast", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "[m1] hi"
    stream = client.chat.completions.create(
        model="chat-fast", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "[m1] hi"
    # The server behind the socket stops: the probe says so, naming the socket, not the url's port.
    fake.stop()
    wait_until(lambda: status(gw)["backends"]["b1"]["state"] == "down", "b1 down once its socket is gone")
    reason = status(gw)["backends"]["b1"]["reason"]
    assert f"cannot connect to unix socket {path}" in reason


def test_a_reload_that_adds_the_socket_moves_the_backend_onto_it(
    start_gateway: Start, backend: Callable[..., FakeBackend], tmp_path: Path
) -> None:
    tcp = backend()  # answers on the url's port
    path = str(tmp_path / "b.sock")
    backend(unix_socket=path, reply="through the socket")  # answers only on the socket
    gw = start_gateway(fabric(tcp.url, path).replace(f', unix_socket: "{path}"', ""))
    client = gw.openai()
    ask = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
    assert client.chat.completions.create(**ask).choices[0].message.content == "[m1] hi"
    gw.call(lambda: gw.gateway.reload(load_config_text(fabric(tcp.url, path), "fabric.yaml", environ={})))
    assert client.chat.completions.create(**ask).choices[0].message.content == "through the socket"
