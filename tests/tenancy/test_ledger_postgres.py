"""PostgreSQL as the ledger of two gateways (replicas): one ledger, every row, budgets seen by both.
Against a real PostgreSQL started by the tests (pg_support)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from ledger_support import Start
from pg_support import PostgresCluster

from aifabric.config.load import load_config_text
from aifabric.errors import StateStoreError
from aifabric.ops.usage import usage_report
from aifabric.tenancy.ledger.postgres import PostgresLedger
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

MESSAGES = [{"role": "user", "content": "shared ledger please"}]


@pytest.fixture
def database(postgres: PostgresCluster) -> str:
    return postgres.create_database("t" + uuid.uuid4().hex[:12])


def count(url: str) -> int:
    store = PostgresLedger(url)
    try:
        return store.count()
    finally:
        store.close()


def test_two_gateways_share_one_ledger_and_its_budgets(
    backend: Callable[..., FakeBackend], start: Start, database: str
) -> None:
    fake = backend(kind="vllm", models=("m1",))
    spare = backend(kind="vllm", models=("m1",))
    text = f"""
backends:
  fake: {{kind: vllm, url: "{fake.url}", budget: 0.0001/month}}
  spare: {{kind: vllm, url: "{spare.url}"}}
roles:
  chat:
    kind: chat
    targets: [{{backend: fake, model: m1, price: {{input: 1, output: 1}}}}]
    fallbacks: [spare-chat]
  spare-chat: {{kind: chat, targets: [{{backend: spare, model: m1}}]}}
usage: {database}
"""
    a, b = start(text), start(text)
    for gw in (a, b, a):
        gw.openai().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    wait_until(lambda: count(database) == 3, "3 rows from two gateways in PostgreSQL")
    report = usage_report(load_config_text(text, "fabric.yaml", environ={}), time.time() - 60, "backend")
    assert report.where.startswith("postgresql://aifabric@127.0.0.1:")
    assert [(r["backend"], r["requests"]) for r in report.rows] == [("fake", 3)]

    # Spend through gateway A alone until the budget is crossed: B, which served nothing more, sees it
    # from the shared ledger and routes to the fallback too.
    def over(gw: object) -> bool:
        return "fake" in gw.call(lambda: gw.gateway.budgets.blocked_backends)  # type: ignore[attr-defined]

    client = a.openai()
    while not over(a):
        client.chat.completions.create(model="chat", messages=MESSAGES * 20)  # type: ignore[arg-type]
        wait_until(lambda: count(database) >= 4, "a row")
        time.sleep(0.3)  # the writer's batch interval: let this row's cost be added before the next
    wait_until(lambda: over(b), "gateway B sees the budget spent through gateway A")
    raw = b.openai().chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-aifabric-backend"] == "spare"


def test_a_ledger_that_cannot_be_reached_stops_the_start_with_the_reason(postgres: PostgresCluster) -> None:
    with pytest.raises(StateStoreError) as refused:
        PostgresLedger(postgres.url("no_such_database"))
    assert "cannot open the usage ledger at postgresql://aifabric@127.0.0.1" in str(refused.value)
    assert "no_such_database" in str(refused.value)
