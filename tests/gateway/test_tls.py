"""`gateway.tls: {cert, key}` terminates TLS on the listener: the official client talks to it over
https with a throwaway CA, plain HTTP on the port gets no answer, a missing file is a clear error."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme

from aifabric.config.load import load_config_text
from aifabric.errors import CommandError
from aifabric.gateway.tls import server_tls_context
from aifabric.testing.fake_backend import FakeBackend

Start = Callable[..., Any]


def tls_fabric(backend_url: str, cert: Path, key: Path) -> str:
    return f"""
gateway: {{tls: {{cert: "{cert}", key: "{key}"}}}}
backends:
  b1: {{kind: vllm, url: "{backend_url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
"""


def test_the_official_client_talks_to_the_gateway_over_tls(
    start_gateway: Start, fb: FakeBackend, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "gw.pem", tmp_path / "gw.key", tmp_path / "ca.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    server_cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    gw = start_gateway(tls_fabric(fb.url, cert, key))
    base = f"https://127.0.0.1:{gw.port}"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file))) as http:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", http_client=http, max_retries=0)
        reply = client.chat.completions.create(
            model="chat-fast", messages=[{"role": "user", "content": "over tls"}]
        )
        assert reply.choices[0].message.content == "[m1] over tls"
        stream = client.chat.completions.create(
            model="chat-fast", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert http.get(base + "/health/live").status_code == 200
    # A client that does not trust the CA is refused by its own verification.
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/health/live")
    # Plain HTTP on the TLS port is not served.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gw.port}/health/live", timeout=3)


def test_a_certificate_that_cannot_be_loaded_is_a_clear_error(tmp_path: Path) -> None:
    config = load_config_text(
        tls_fabric("http://127.0.0.1:9/v1", tmp_path / "missing.pem", tmp_path / "missing.key"),
        "fabric.yaml",
        environ={},
    )
    assert config.gateway.tls is not None
    with pytest.raises(CommandError, match=r"gateway.tls: cannot load the certificate .*missing.pem"):
        server_tls_context(config.gateway.tls)
