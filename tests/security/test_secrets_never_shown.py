"""Secrets never appear: not in logs, metrics, health, status, alerts, error bodies or `config show`.

One estate with a gateway key, an admin key, a backend key and a key in a backend URL's query
(`?key=${X}`), driven through success, a backend that rejects its key, a backend whose error message
quotes the key it was sent, a client with a wrong key, and a backend that goes down; then everything
an operator or a client can read (error bodies, logs, /health, /status, /alerts, /metrics, the page,
`config show`, `status --json`, `health --json`) is searched for the secrets (and a prefix of them).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config
from aifabric.observability import logging as aifabric_logging
from aifabric.observability.logging import JsonFormatter, redact
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

GATEWAY_KEY = "sk-gw-7f3a9c1e5b2d4f6a8c0e"
BACKEND_KEY = "sk-be-2b4d6f8a0c1e3a5c7e9b"
ADMIN_KEY = "sk-admin-5d7f9b1d3f5b7d9f1b3d"
URL_KEY = "urlkey-8e6c4a2e0c8a6e4c2a0e"
SECRETS = (GATEWAY_KEY, BACKEND_KEY, ADMIN_KEY, URL_KEY)


def cli(*argv: str) -> tuple[int, str, str]:
    """`aifabric ARGV` in this process: its exit status, what it printed on stdout and on stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue(), err.getvalue()


def status_shown(url: str) -> tuple[str, str]:
    """`aifabric status --json` against a running gateway, as an operator reads it."""
    _, out, err = cli("status", "--url", url, "--api-key", ADMIN_KEY, "--json")
    assert '"backends"' in out
    return ("status --json", out + err)


def health_shown(fabric: Path) -> tuple[str, str]:
    """`aifabric health --config FILE --json`: its own probes of the file's backends."""
    _, out, err = cli("health", "--config", str(fabric), "--json")
    return ("health --json", out + err)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"
        assert secret[:12] not in text, f"a prefix of a secret appears in {where}"


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets registered for redaction (a process-wide set each gateway adds its file's to) are
    restored after each test here: no test's keys leak into later tests'."""
    monkeypatch.setattr(aifabric_logging, "_secrets", set(aifabric_logging._secrets))


def test_no_surface_shows_a_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env_file = tmp_path / "secrets.env"
    env_file.write_text(
        f"FABRIC_MASTER_KEY={GATEWAY_KEY}\nBACKEND_KEY={BACKEND_KEY}\nADMIN_KEY={ADMIN_KEY}\n"
        f"URL_KEY={URL_KEY}\n"
    )
    env_file.chmod(0o600)
    with (
        FakeBackend(kind="vllm", models=("m1",), api_key=BACKEND_KEY) as good,
        FakeBackend(kind="vllm", models=("m1",), api_key="a-different-key") as wrong_key,
        # A cloud that quotes the key it was sent in its error message, to the client and to probes.
        FakeBackend(
            kind="openai",
            models=("m1",),
            fail_first_n=1000,
            fail_status=400,
            fault_scope="all",
            fail_body=f'{{"error": {{"message": "Incorrect API key provided: {BACKEND_KEY}", "type": '
            '"invalid_request_error", "param": null, "code": "invalid_api_key"}}',
        ) as quoting,
    ):
        fabric = tmp_path / "fabric.yaml"
        fabric.write_text(
            f"""
gateway:
  api_keys: ["${{FABRIC_MASTER_KEY}}"]
  admin_keys: ["${{ADMIN_KEY}}"]
  env_file: {env_file}
  access_log: true
backends:
  good: {{kind: vllm, url: "{good.url}", api_key: "${{BACKEND_KEY}}", health: {{interval: 100ms}}}}
  wrong: {{kind: vllm, url: "{wrong_key.url}", api_key: "${{BACKEND_KEY}}", health: {{interval: 100ms}}}}
  quoting: {{kind: openai, url: "{quoting.url}", api_key: "${{BACKEND_KEY}}", health: {{interval: 100ms}}}}
  keyed: {{kind: vllm, url: "http://127.0.0.1:9/v1?key=${{URL_KEY}}", health: {{interval: 100ms}}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: good, model: m1}}]}}
  chat-deep: {{kind: chat, targets: [{{backend: wrong, model: m1}}]}}
  chat-cloud: {{kind: chat, targets: [{{backend: quoting, model: m1}}]}}
"""
        )
        gw = RunningGateway(load_config(fabric, environ={}), probe=True).start()
        seen: list[tuple[str, str]] = []
        try:
            auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
            body = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
            ok = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth)
            assert ok.status_code == 200
            seen.append(("a successful response", ok.text + str(ok.headers)))
            # The backend refuses the key the fabric file gives it: an auth failure, shown to the client.
            refused = httpx.post(
                gw.url + "/v1/chat/completions", json=dict(body, model="chat-deep"), headers=auth
            )
            assert refused.status_code >= 400
            seen.append(("the error body of a backend auth failure", refused.text + str(refused.headers)))
            wrong = httpx.post(
                gw.url + "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {GATEWAY_KEY}x"},
            )
            assert wrong.status_code == 401
            seen.append(("the 401 for a wrong client key", wrong.text))
            quoted = httpx.post(
                gw.url + "/v1/chat/completions", json=dict(body, model="chat-cloud"), headers=auth
            )
            assert quoted.status_code == 400 and "Incorrect API key provided: ********" in quoted.text
            seen.append(("an upstream error quoting the key", quoted.text))
            # The same upstream error on the other APIs, plain and streamed, in each API's own shape.
            prompt = [{"role": "user", "content": "hi"}]
            for stream in (False, True):
                messages = httpx.post(
                    gw.url + "/v1/messages",
                    json={"model": "chat-cloud", "max_tokens": 8, "messages": prompt, "stream": stream},
                    headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"},
                )
                assert messages.status_code == 400, messages.text
                assert messages.json()["type"] == "error", messages.text  # Anthropic's shape
                assert "Incorrect API key provided: ********" in messages.text
                seen.append((f"/v1/messages (stream={stream}) quoting the key", messages.text))
                responses = httpx.post(
                    gw.url + "/v1/responses",
                    json={"model": "chat-cloud", "input": "hi", "stream": stream},
                    headers=auth,
                )
                assert responses.status_code == 400, responses.text
                assert "Incorrect API key provided: ********" in responses.json()["error"]["message"]
                seen.append((f"/v1/responses (stream={stream}) quoting the key", responses.text))
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            good.stop()  # a backend goes down: probes fail, alerts fire, reasons are written
            wait_until(
                lambda: (
                    httpx.get(gw.url + "/health", headers=admin).json()["backends"]["good"]["state"] == "down"
                ),
                "the probes to find backend good down",
            )
            for path in ("/metrics", "/health", "/status", "/alerts", "/health/ready", "/ui"):
                if path != "/health/ready":  # open to all; the rest is for operators only
                    assert httpx.get(gw.url + path, headers=auth).status_code == 403, path
                r = httpx.get(gw.url + path, headers=admin)
                assert r.status_code in (200, 503), (path, r.status_code)
                seen.append((path, r.text))
            health = httpx.get(gw.url + "/health", headers=admin).text
            assert "Incorrect API key provided: ********" in health  # the probe's reason, redacted
            assert "key=********" in health  # the URL stays useful, its key does not show
            seen.append(status_shown(gw.url))
        finally:
            gw.stop()
    seen.append(health_shown(fabric))
    assert '"keyed"' in seen[-1][1]
    code, out, err = cli("config", "show", str(fabric))
    assert code == 0
    seen.append(("config show", out + err))
    _, out, err = cli("config", "show", str(fabric), "--json")
    seen.append(("config show --json", out + err))
    formatter = JsonFormatter()
    seen.append(("the log", "\n".join(formatter.format(r) for r in caplog.records)))
    log_text = seen[-1][1]
    # The log recorded what happened (access lines, the backend going down): its silence counts.
    assert '"role":"chat-fast"' in log_text and "backend good" in log_text
    for where, text in seen:
        assert_no_secret(text, where)


def test_no_surface_shows_a_key_of_the_key_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key made by `keys create`, used, refused (403, 429), listed, rotated: it is printed once by
    `create` and nowhere else, not even the first characters beyond what `keys list` shows."""
    caplog.set_level(logging.DEBUG)
    with FakeBackend(kind="vllm", models=("m1",)) as backend:
        fabric = tmp_path / "fabric.yaml"
        fabric.write_text(
            f"""
gateway: {{access_log: true}}
keys: sqlite://{tmp_path}/keys.db
backends:
  b: {{kind: vllm, url: "{backend.url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
  chat-deep: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
"""
        )
        code, out, err = cli(
            "keys", "create", "--name", "app", "--roles", "chat-fast", "--rpm", "1", "-c", str(fabric)
        )
        assert code == 0
        key = out.strip()
        seen: list[tuple[str, str]] = [("what keys create says besides the key", err)]
        code, out, _ = cli("keys", "create", "--name", "ops", "--scope", "admin", "-c", str(fabric))
        assert code == 0
        admin = {"authorization": f"Bearer {out.strip()}"}  # operator views need an admin key
        gw = RunningGateway(load_config(fabric, environ={}), probe=True).start()
        try:
            auth = {"authorization": f"Bearer {key}"}
            body = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
            ok = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth)
            assert ok.status_code == 200, ok.text
            seen.append(("a successful response", ok.text + str(ok.headers)))
            limited = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth)
            assert limited.status_code == 429
            seen.append(("the 429", limited.text + str(limited.headers)))
            denied = httpx.post(
                gw.url + "/v1/chat/completions", json=dict(body, model="chat-deep"), headers=auth
            )
            assert denied.status_code == 403
            seen.append(("the 403", denied.text))
            wrong = httpx.post(
                gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}x"}
            )
            assert wrong.status_code == 401
            seen.append(("the 401 for a wrong key", wrong.text))
            for path in ("/metrics", "/health", "/status", "/ui"):
                assert httpx.get(gw.url + path, headers=auth).status_code == 403  # not an admin key
                seen.append((path, httpx.get(gw.url + path, headers=admin).text))
            status = httpx.get(gw.url + "/status", headers=admin).json()
            assert status["gateway"]["auth_required"] is True, "a stored key closes the gateway"
            assert status["tenancy"]["keys"]["keys"] == 2
        finally:
            gw.stop()
    for argv in (
        ["keys", "list"],
        ["keys", "list", "--json"],
        ["keys", "rotate", "app"],
        ["keys", "revoke", "app"],
    ):
        code, out, err = cli(*argv, "-c", str(fabric))
        assert code == 0
        shown = err if argv[1] == "rotate" else out + err  # rotate's stdout is the new key, printed once
        seen.append((" ".join(argv), shown))
    formatter = JsonFormatter()
    seen.append(("the log", "\n".join(formatter.format(r) for r in caplog.records)))
    assert '"role":"chat-fast"' in seen[-1][1] and '"key":"app"' in seen[-1][1], (
        "the access log names the key"
    )
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    seen.append(("the key store's files", stored.decode("latin-1")))
    for where, text in seen:
        assert key not in text, f"the key appears in {where}"
        assert key[:12] not in text, f"a prefix of the key beyond `keys list`'s appears in {where}"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/messages", {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
    ],
    ids=["chat", "messages", "responses"],
)
def test_a_stream_error_event_quoting_the_key_is_redacted(
    start_gateway: Any, path: str, body: dict[str, Any]
) -> None:
    """A backend that fails mid-stream with an error event quoting the key it was sent, relayed as it
    streams (natively, not translated): the client reads what happened without the key."""
    failing = f"Incorrect API key provided: {BACKEND_KEY}"
    with FakeBackend(kind="vllm", models=("m1",), api_key=BACKEND_KEY, stream_error=failing) as fake:
        gw = start_gateway(
            f"""
backends: {{b: {{kind: vllm, url: "{fake.url}", api_key: "{BACKEND_KEY}"}}}}
roles:
  chat: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
"""
        )
        headers = {"anthropic-version": "2023-06-01"}
        payload = {**body, "model": "chat", "stream": True}
        with httpx.stream("POST", gw.url + path, json=payload, headers=headers, timeout=10) as r:
            assert r.status_code == 200
            assert "x-aifabric-translated" not in r.headers  # relayed as the backend streamed it
            text = r.read().decode()
        assert fake.requests[-1].path == path
    assert "Incorrect API key provided: ********" in text, text
    assert_no_secret(text, f"the {path} stream's error event")


def test_a_secret_in_any_url_valued_setting_is_never_shown(
    tmp_path: Path, postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Secrets in the query or userinfo of every URL-valued setting (tracing.endpoint, keys:, usage:,
    a backend's url): masked by one rule in `config show` (text and JSON), /status, `status --json`
    and `health --json`, the URLs still readable."""
    caplog.set_level(logging.DEBUG)
    planted = {
        "tracing": "tracetoken-4f1e9a7c3b5d",
        "keys": "redispass-8c2a6e4f0b1d",
        "usage": "pgpassword-3e5c7a9b1d2f",
        "backend": "backendtok-6a8c0e2b4d6f",
    }
    redis_port = free_port()  # nothing listens: the key store is unreachable, the gateway says so
    ledger = postgres.create_database("secrets_in_urls")  # trusts local logins: the password is unused
    usage_url = ledger.replace("aifabric@", f"aifabric:{planted['usage']}@", 1)
    usage_url = f"{usage_url}?password={planted['usage']}&application_name=aifabric"
    with FakeBackend(kind="vllm", models=("m1",)) as backend:
        fabric = tmp_path / "fabric.yaml"
        fabric.write_text(
            f"""
gateway: {{admin_keys: ["{ADMIN_KEY}"]}}
tracing: {{endpoint: "http://127.0.0.1:9/otlp?token={planted["tracing"]}"}}
keys: "redis://127.0.0.1:{redis_port}/0?password={planted["keys"]}"
usage: "{usage_url}"
backends:
  b: {{kind: vllm, url: "{backend.url}?token={planted["backend"]}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
"""
        )
        seen: list[tuple[str, str]] = []
        for argv in (["config", "show", str(fabric)], ["config", "show", str(fabric), "--json"]):
            code, shown, err = cli(*argv)
            assert code == 0, err
            assert "token=********" in shown and "password=********" in shown, shown
            assert "application_name=********" in shown  # a URL shown masks every query value
            seen.append((" ".join(argv[:2] + argv[3:]), shown + err))
        gw = RunningGateway(load_config(fabric, environ={}), probe=True).start()
        try:
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            status = httpx.get(gw.url + "/status", headers=admin)
            assert status.status_code == 200
            assert "password=********" in status.json()["tenancy"]["keys"]["store"]
            assert "password=********" in status.json()["usage"]["ledger"]
            seen.append(("/status", status.text))
            seen.append(status_shown(gw.url))
        finally:
            gw.stop()
        seen.append(health_shown(fabric))
        assert "token=********" in seen[-1][1]
    formatter = JsonFormatter()
    seen.append(("the log", "\n".join(formatter.format(r) for r in caplog.records)))
    # Only credentials are hunted for by value: the product's name in a URL's query is not one.
    assert "aifabric" in redact("run `aifabric up`")
    for where, text in seen:
        for setting, secret in planted.items():
            assert secret not in text, f"the secret of {setting} appears in {where}"
            assert secret[:10] not in text, f"a prefix of the secret of {setting} appears in {where}"
