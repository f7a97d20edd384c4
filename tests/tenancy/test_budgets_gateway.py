"""A backend over its budget drops out of routing: its role's traffic moves to the fallback, and when
no candidate is left within budget the client gets 429 naming the budgets. The `budget` alert fires."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from ledger_support import Start, ledger_rows
from tenancy_support import MASTER, fabric_text, keys_cli

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

MESSAGES = [{"role": "user", "content": "spend a little of the budget"}]


def blocked(gw: RunningGateway) -> dict[str, str]:
    assert gw.gateway is not None
    return dict(gw.call(lambda: gw.gateway.budgets.blocked_backends))  # type: ignore[union-attr,call-overload]


def served_by(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    return raw.headers["x-aifabric-backend"]


def test_budget_exhaustion_moves_traffic_to_the_fallback_then_answers_429(
    backend: Callable[..., FakeBackend], start: Start, ledger_path: Path
) -> None:
    paid = backend(kind="vllm", models=("m1",))
    spare = backend(kind="vllm", models=("m1",))
    # One request costs ~(6 + 9) tokens at 1 per token-million: 0.000015, over a budget of 0.00001.
    gw = start(
        f"""
backends:
  paid: {{kind: vllm, url: "{paid.url}", budget: 0.00001/day}}
  spare: {{kind: openai, url: "{spare.url}", budget: 0.00001/day}}
roles:
  chat:
    kind: chat
    targets: [{{backend: paid, model: m1, price: {{input: 1, output: 1}}}}]
    fallbacks: [spare-chat]
  spare-chat:
    kind: chat
    targets: [{{backend: spare, model: m1, price: {{input: 1, output: 1}}}}]
usage: {ledger_path}
"""
    )
    client = gw.openai()
    assert served_by(client) == "paid"
    wait_until(lambda: "paid" in blocked(gw), "the paid backend out of routing")
    assert "0.00001/day" in blocked(gw)["paid"]

    assert served_by(client) == "spare"  # the role goes on to its fallback
    wait_until(lambda: "spare" in blocked(gw), "the spare backend out of routing")
    paid_seen, spare_seen = paid.count("/v1/chat/completions"), spare.count("/v1/chat/completions")

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    message = refused.value.message
    assert "budget" in message and "'paid'" in message and "'spare'" in message
    assert refused.value.code == "budget_exceeded"
    # Neither backend was sent the refused request.
    assert (paid.count("/v1/chat/completions"), spare.count("/v1/chat/completions")) == (
        paid_seen,
        spare_seen,
    )
    # ...and the ledger holds the two requests that were served, and the refused one.
    rows = ledger_rows(ledger_path, 3)
    assert [(r.backend, r.status) for r in rows] == [("paid", 200), ("spare", 200), ("", 429)]
    assert rows[2].key == "anonymous" and rows[2].tokens_in == rows[2].tokens_out == 0
    assert rows[2].role == "chat", "the refused request's row names the role it asked for"

    # The `budget` alert fires for both, CRITICAL (100%).
    assert gw.gateway is not None
    events = gw.call(gw.gateway.monitor.evaluate)
    fired = {e.alert.subject: e.alert for e in events if e.alert.rule == "budget"}  # type: ignore[attr-defined]
    assert set(fired) == {"backend:paid", "backend:spare"}
    assert all(a.severity.label == "critical" for a in fired.values())
    assert "out of routing" in fired["backend:paid"].fix


def test_a_key_over_its_budget_gets_429_and_other_keys_go_on(
    backend: Callable[..., FakeBackend], tmp_path: Path, ledger_path: Path
) -> None:
    from aifabric.config.load import load_config

    fake = backend(kind="vllm", models=("m1",))
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(
        fabric_text(fake.url, f"sqlite://{tmp_path}/keys.db", extra=f"usage: {ledger_path}\n").replace(
            "model: m1}", "model: m1, price: {input: 1, output: 1}}"
        )
    )
    created = keys_cli(fabric_file, "create", "--name", "nightly", "--budget", "0.00001/day")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    gw = RunningGateway(load_config(fabric_file, environ={})).start()
    try:
        client = gw.openai(key)
        wait_until(lambda: _answers(client), "the new key is accepted")
        wait_until(lambda: not _answers(client), "the key's budget spent")
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="chat-fast", messages=MESSAGES)  # type: ignore[arg-type]
        assert refused.value.code == "budget_exceeded"
        assert "the key 'nightly' has spent" in refused.value.message
        assert "of its budget of 0.00001/day" in refused.value.message and key not in refused.value.message
        # The master key has no budget: it goes on.
        gw.openai(MASTER).chat.completions.create(model="chat-fast", messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        gw.stop()


def _answers(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(model="chat-fast", messages=MESSAGES)  # type: ignore[arg-type]
    except (openai.AuthenticationError, openai.RateLimitError):
        return False
    return True
