"""Reading the ledger as an operator would: the SQLite file itself, once the writer has caught up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aifabric.tenancy.ledger import UsageRow
from aifabric.tenancy.ledger.sqlite import SqliteLedger
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

Start = Callable[..., RunningGateway]  # the `start` fixture: start(yaml) -> a running gateway


def ledger_rows(path: Path, count: int) -> list[UsageRow]:
    """The rows of the SQLite ledger at `path`, once it holds `count` of them (oldest first)."""

    def enough() -> bool:
        store = SqliteLedger(path)
        try:
            return store.count() >= count
        finally:
            store.close()

    wait_until(enough, f"{count} rows in the ledger {path}")
    store = SqliteLedger(path)
    try:
        return store.rows()
    finally:
        store.close()


def fabric(url: str, ledger: str | Path, *, kind: str = "vllm", extra: str = "") -> str:
    return f"""
backends:
  fake: {{kind: {kind}, url: "{url}"}}
roles:
  chat:
    kind: chat
    targets: [{{backend: fake, model: m1, price: {{input: 2, output: 8}}}}]
usage: {ledger}
{extra}
"""
