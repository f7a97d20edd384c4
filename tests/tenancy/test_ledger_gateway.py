"""Every request lands in the usage ledger, with the backend's own token counts where it gives them
and counted (marked estimated) where it does not; the ledger survives a restart of the gateway."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from ledger_support import Start, fabric, ledger_rows

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.tenancy.keystore import SqliteKeyStore
from aifabric.tenancy.manage import KeySpec, create_key
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

MESSAGES = [{"role": "user", "content": "count the words of this prompt please"}]


def test_a_request_is_recorded_with_the_backends_counts_and_its_cost(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="vllm", models=("m1",))
    gw = start(fabric(fake.url, ledger_path))
    answer = gw.openai().chat.completions.create(model="chat", messages=MESSAGES, max_tokens=20)  # type: ignore[arg-type]
    [row] = ledger_rows(ledger_path, 1)
    assert answer.usage is not None
    assert (row.tokens_in, row.tokens_out) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert not row.estimated
    assert (row.key, row.role, row.backend, row.model, row.endpoint, row.status) == (
        "anonymous",
        "chat",
        "fake",
        "m1",
        "/chat/completions",
        200,
    )
    # price: 2 per million in, 8 per million out
    assert row.cost == pytest.approx((2 * row.tokens_in + 8 * row.tokens_out) / 1e6)
    assert row.request_id and row.latency_ms > 0


def test_a_stream_is_counted_by_the_backend_without_the_client_seeing_the_usage_chunk(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="vllm", models=("m1",))
    gw = start(fabric(fake.url, ledger_path))
    chunks = list(
        gw.openai().chat.completions.create(model="chat", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    )
    # The gateway asked the backend for the usage chunk on the ledger's behalf...
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    # ...and the client, which did not ask, got the stream without it.
    assert all(c.usage is None and c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    [row] = ledger_rows(ledger_path, 1)
    assert not row.estimated
    assert row.tokens_in == 7  # the fake counts words: the backend's own figure, not an estimate
    assert row.tokens_out == len(text.split())


def _usage_cuts(upstream: bytes) -> dict[str, int]:
    """Where to cut a stream's usage-only event: inside its `"usage"`, inside the usage object, and
    between the two newlines that end it."""
    at = upstream.rindex(b'"usage"')
    end = upstream.index(b"\n\n", at)
    return {"in-usage-mark": at + 3, "in-usage-object": at + 12, "in-blank-line": end + 1}


def test_a_usage_chunk_cut_between_reads_is_still_taken_out_whole(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    """The usage-only event the gateway asked for on the ledger's behalf, arriving in two reads, is
    taken out whole: the client gets neither half (a chunk without choices breaks `choices[0]`), and
    the ledger still gets the backend's figures."""
    fake = backend(kind="vllm", models=("m1",))
    gw = start(fabric(fake.url, ledger_path))
    asked = {"model": "m1", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    upstream = httpx.post(fake.url + "/chat/completions", json=asked, timeout=10).content
    for n, (where, at) in enumerate(_usage_cuts(upstream).items(), start=1):
        fake.set(split_at=[at], token_delay_ms=100)  # the gateway reads the two pieces apart
        raw = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True},
            timeout=20,
        ).content
        assert b'"usage"' not in raw and raw.endswith(b"data: [DONE]\n\n"), f"cut {where}: {raw!r}"
        chunks = list(
            gw.openai().chat.completions.create(model="chat", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        )
        assert all(c.usage is None and c.choices for c in chunks), f"cut {where}"
        rows = ledger_rows(ledger_path, 2 * n)[-2:]
        assert all(not r.estimated and r.tokens_in == 7 for r in rows), f"cut {where}: {rows}"


def test_a_client_that_asks_for_usage_gets_it_and_the_ledger_the_same_figures(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="vllm", models=("m1",))
    gw = start(fabric(fake.url, ledger_path))
    chunks = list(
        gw.openai().chat.completions.create(
            model="chat",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    [row] = ledger_rows(ledger_path, 1)
    assert (row.tokens_in, row.tokens_out, row.estimated) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        False,
    )


def test_a_stream_without_usage_is_counted_and_marked_estimated(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    # llama-cpp-python's server ignores stream_options: no usage chunk ever comes.
    fake = backend(kind="llama-cpp-python", models=("m1",))
    gw = start(fabric(fake.url, ledger_path, kind="llama-cpp-python"))
    chunks = list(
        gw.openai().chat.completions.create(model="chat", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    )
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    [row] = ledger_rows(ledger_path, 1)
    assert row.estimated
    assert row.tokens_out == len(content_chunks)  # one token per content event there
    assert row.tokens_in >= 7  # the prompt, estimated from its text (no local model to count with)
    wait_until(
        lambda: (
            httpx.get(gw.url + "/status").json()["usage"]["by_key"].get("anonymous", {}).get("tokens_out")
            == len(content_chunks)
        ),
        "the status page's usage of the key",
    )


def test_embeddings_are_recorded(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="vllm", models=("e1",))
    gw = start(
        f"""
backends:
  fake: {{kind: vllm, url: "{fake.url}"}}
roles:
  embed: {{kind: embeddings, targets: [{{backend: fake, model: e1}}]}}
usage: {ledger_path}
"""
    )
    answer = gw.openai().embeddings.create(model="embed", input=["one two three", "four five"])
    [row] = ledger_rows(ledger_path, 1)
    assert row.tokens_in == answer.usage.prompt_tokens and row.tokens_out == 0 and not row.estimated


def test_the_ledger_survives_a_restart_and_usage_reports_it(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path, tmp_path: Path
) -> None:
    fake = backend(kind="vllm", models=("m1",))
    text = fabric(fake.url, ledger_path)
    first = start(text)
    for _ in range(3):
        first.openai().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    first.stop()  # a clean stop writes what is queued before it returns
    assert len(ledger_rows(ledger_path, 3)) == 3
    second = start(text)
    second.openai().chat.completions.create(model="chat", messages=MESSAGES, stream=True).close()  # type: ignore[arg-type]
    second.stop()
    rows = ledger_rows(ledger_path, 4)
    assert len(rows) == 4

    config = tmp_path / "fabric.yaml"
    config.write_text(text)
    out = io.StringIO()
    assert main(["usage", "--config", str(config), "--by", "model", "--json"], Console(out=out)) == 0
    report = json.loads(out.getvalue())
    assert report["total"]["requests"] == 4
    assert report["rows"][0]["model"] == "m1"
    assert report["total"]["tokens_in"] == sum(r.tokens_in for r in rows)


def test_metrics_carry_tokens_and_cost_by_key(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="vllm", models=("m1",))
    gw = start(fabric(fake.url, ledger_path))
    answer = gw.openai().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    [row] = ledger_rows(ledger_path, 1)
    assert answer.usage is not None
    tokens_in = f'aifabric_usage_tokens_total{{key="anonymous",direction="in"}} {answer.usage.prompt_tokens}'
    wait_until(lambda: tokens_in in httpx.get(gw.url + "/metrics").text, "the key's tokens in /metrics")
    metrics = httpx.get(gw.url + "/metrics").text.splitlines()
    assert f'aifabric_usage_tokens_total{{key="anonymous",direction="out"}} {row.tokens_out}' in metrics
    assert f'aifabric_usage_cost_total{{key="anonymous"}} {row.cost:.6f}' in metrics
    assert 'aifabric_usage_ledger_rows_total{outcome="dropped"} 0' in metrics


def test_a_stream_cut_mid_way_is_recorded_with_what_it_spent(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="llama-cpp-python", models=("m1",), tokens=20, crash_after_chunks=4)
    gw = start(fabric(fake.url, ledger_path, kind="llama-cpp-python"))
    received = []
    with pytest.raises(openai.APIError):
        for chunk in gw.openai().chat.completions.create(model="chat", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
            received.append(chunk)
    [row] = ledger_rows(ledger_path, 1)
    assert row.status == 502 and row.estimated
    content = [c for c in received if c.choices and c.choices[0].delta.content]
    assert row.tokens_out == len(content) > 0  # generated before the cut: spent all the same
    assert row.tokens_in >= 7


@pytest.mark.parametrize(("kind", "translated"), [("llamacpp", False), ("openai", True)])
def test_anthropic_messages_native_or_translated_are_recorded_with_the_backends_counts(
    backend: Callable[..., FakeBackend],
    start: Start,
    ledger_path: Path,
    kind: str,
    translated: bool,
    request: pytest.FixtureRequest,
) -> None:
    import anthropic

    fake = backend(kind=kind, models=("m1",))
    gw = start(fabric(fake.url, ledger_path, kind=kind))
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    request.addfinalizer(client.close)
    asked = [{"role": "user", "content": "count the words of this prompt please"}]
    raw = client.messages.with_raw_response.create(model="chat", max_tokens=30, messages=asked)  # type: ignore[arg-type]
    assert (raw.headers.get("x-aifabric-translated") == "chat") is translated
    answer = raw.parse()
    with client.messages.stream(model="chat", max_tokens=30, messages=asked) as stream:  # type: ignore[arg-type]
        streamed = stream.get_final_message()
    first, second = ledger_rows(ledger_path, 2)
    assert (first.tokens_in, first.tokens_out) == (answer.usage.input_tokens, answer.usage.output_tokens)
    assert (second.tokens_in, second.tokens_out) == (
        streamed.usage.input_tokens,
        streamed.usage.output_tokens,
    )
    assert not first.estimated and not second.estimated
    assert first.endpoint == second.endpoint


class _HoldsAfterDone:
    """An upstream whose stream sends its last event ([DONE]) and then keeps the body open for a while
    before the terminating chunk, as a busy server may: the client has its whole answer by then."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if b"content-length" in line.lower())
            )
            while len(body) < length:
                body += conn.recv(65536)
            chunk = b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m1","choices":'
            events = [
                b"data: " + chunk + b'[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n',
                b"data: "
                + chunk
                + b'[],"usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}\n\n',
                b"data: [DONE]\n\n",
            ]
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for event in events:
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            time.sleep(self.hold)
            with contextlib.suppress(OSError):
                conn.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        self.listener.close()


def test_a_client_that_closes_after_the_last_event_got_its_answer_and_is_not_a_499(
    start: Start, ledger_path: Path
) -> None:
    upstream = _HoldsAfterDone(hold=3.0)
    try:
        gw = start(fabric(upstream.url, ledger_path))
        body = {"model": "chat", "messages": MESSAGES, "stream": True}
        with httpx.Client() as client, client.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    break  # what an SDK does: the answer is whole; the connection is dropped now
        [row] = ledger_rows(ledger_path, 1)
        assert (row.status, row.tokens_in, row.tokens_out) == (200, 4, 1)
        # The target's books are square too: the attempt counted as a success, not an abandon.
        [target] = httpx.get(gw.url + "/status").json()["roles"]["chat"]["targets"]
        assert (target["outstanding"], target["successes"]) == (0, 1)
    finally:
        upstream.close()


def test_a_target_that_timed_out_before_the_failover_is_recorded_beside_the_one_that_served(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    # The priced backend got the request and worked on it past the per-try timeout: its tokens may
    # be spent (and billed) though another backend served the answer.
    slow = backend(kind="vllm", models=("m1",), latency_ms=1500)
    spare = backend(kind="vllm", models=("m1",))
    gw = start(f"""
backends:
  slow: {{kind: openai, url: "{slow.url}", timeout: 0.5s}}
  spare: {{kind: vllm, url: "{spare.url}"}}
roles:
  chat:
    kind: chat
    targets: [{{backend: slow, model: m1, price: {{input: 2, output: 8}}}}]
    fallbacks: [other]
  other: {{kind: chat, targets: [{{backend: spare, model: m1}}]}}
usage: {ledger_path}
""")
    answer = gw.openai().chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.headers["x-aifabric-backend"] == "spare"
    assert slow.count("/v1/chat/completions") == 1
    timed_out, served = sorted(ledger_rows(ledger_path, 2), key=lambda r: r.backend != "slow")
    assert (timed_out.backend, timed_out.model, timed_out.status) == ("slow", "m1", 504)
    assert timed_out.estimated and timed_out.tokens_in >= 7 and timed_out.tokens_out == 0
    assert timed_out.cost == pytest.approx(2 * timed_out.tokens_in / 1e6)  # its estimated input
    assert (served.backend, served.status, served.estimated) == ("spare", 200, False)
    assert timed_out.request_id == served.request_id == answer.headers["x-request-id"]


def test_a_client_that_gives_up_before_the_answer_leaves_an_estimated_row(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    fake = backend(kind="vllm", models=("m1",), latency_ms=1500)
    gw = start(fabric(fake.url, ledger_path))
    with pytest.raises(openai.APITimeoutError):
        gw.openai(timeout=0.3).chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    [row] = ledger_rows(ledger_path, 1)
    assert (row.backend, row.model, row.status) == ("fake", "m1", 499)
    assert row.estimated and row.tokens_in >= 7 and row.tokens_out == 0
    assert row.cost == pytest.approx(2 * row.tokens_in / 1e6)
    assert fake.count("/v1/chat/completions") == 1


def test_a_backend_that_refuses_the_connection_leaves_no_attempt_row(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    spare = backend(kind="vllm", models=("m1",))
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    gw = start(f"""
backends:
  dead: {{kind: vllm, url: "{dead}"}}
  spare: {{kind: vllm, url: "{spare.url}"}}
roles:
  chat: {{kind: chat, targets: [{{backend: dead, model: m1}}], fallbacks: [other]}}
  other: {{kind: chat, targets: [{{backend: spare, model: m1}}]}}
usage: {ledger_path}
""")
    gw.openai().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    gw.stop()  # every queued row written
    assert [(r.backend, r.status) for r in ledger_rows(ledger_path, 1)] == [("spare", 200)]


def test_refused_requests_are_recorded_with_the_role_they_asked_for(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path, tmp_path: Path
) -> None:
    store = SqliteKeyStore(tmp_path / "keys.db")
    try:
        key, _ = create_key(store, KeySpec(name="app", roles=("chat",)), time.time())
    finally:
        store.close()
    fake = backend(kind="vllm", models=("m1",))
    gw = start(
        fabric(fake.url, ledger_path, extra=f'keys: "sqlite://{tmp_path}/keys.db"')
        .replace("    kind: chat\n", "    kind: chat\n    limits: {rpm: 1}\n", 1)
        .replace("roles:\n", "roles:\n  other: {kind: chat, targets: [{backend: fake, model: m1}]}\n", 1)
    )
    client = gw.openai(key)
    client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):  # the role's 1 request per minute
        client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError):  # a role the key may not use
        client.chat.completions.create(model="other", messages=MESSAGES)  # type: ignore[arg-type]
    rows = ledger_rows(ledger_path, 3)
    assert [(r.key, r.role, r.backend, r.status) for r in rows] == [
        ("app", "chat", "fake", 200),
        ("app", "chat", "", 429),
        ("app", "other", "", 403),
    ]
