"""/status's `usage` of `aifabric serve --workers 2`: the requests, tokens and cost per key and the ledger's
row counts are every worker's summed (from the files `/metrics` sums: observability.merged), so they
match the ledger itself and `/metrics`, whichever worker answers."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from workers_support import ADMIN, MASTER, fabric_text, serve_workers

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config_text
from aifabric.observability.merged import SummedCounters, counter_samples, samples
from aifabric.tenancy.budget import BudgetTracker
from aifabric.tenancy.ledger import Ledger, Pending
from aifabric.tenancy.ledger.sqlite import SqliteLedger
from aifabric.tenancy.pricing import Pricing
from aifabric.tenancy.usage_view import usage_metrics, usage_view
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

PRICE = "{input: 1000, output: 2000}"  # per million tokens: a request costs cents, well above rounding


def cli(*args: str) -> str:
    """An `aifabric` command in this process, as an operator types it; its stdout."""
    out, err = io.StringIO(), io.StringIO()
    assert main(list(args), console=Console(out, err)) == 0, err.getvalue()
    return out.getvalue()


def admin_get(url: str, path: str) -> httpx.Response:
    """One operator request on a connection of its own (so the kernel picks the worker)."""
    with httpx.Client(timeout=10) as http:
        answer = http.get(url + path, headers={"Authorization": f"Bearer {ADMIN}"})
        answer.raise_for_status()
        return answer


def test_the_view_sums_every_worker_s_usage_and_says_how_many(tmp_path: Path) -> None:
    # A price of 1 per token: the costs are the token counts, exactly.
    fabric = fabric_text("http://127.0.0.1:9/v1", price="{input: 1000000, output: 1000000}")
    config = load_config_text(fabric, "fabric.yaml", environ={})
    path = tmp_path / "usage.db"
    ledgers = [Ledger(lambda: SqliteLedger(path), Pricing.from_config(config), interval=0.01) for _ in "12"]
    rows = [(0, "master", 10, 5), (0, "team-a", 3, 4), (1, "team-a", 7, 6), (1, "team-a", 1, 1)]
    for i, (worker, key, t_in, t_out) in enumerate(rows):
        usage = f'"usage":{{"prompt_tokens":{t_in},"completion_tokens":{t_out}}}}}'.encode()
        pending = Pending(
            time.time(), key, "chat-fast", "b", "m1", "/chat/completions", 200, 0.01, f"r{i}", usage
        )
        ledgers[worker].record(pending)
    budgets = BudgetTracker(config)
    for ledger in ledgers:
        ledger.start()
    try:
        wait_until(lambda: sum(led.stats.written for led in ledgers) == len(rows), "every row written")
    finally:
        for ledger in ledgers:
            ledger.close()
    texts = ["\n".join(usage_metrics(ledger, budgets)) + "\n" for ledger in ledgers]
    view = usage_view(ledgers[0], budgets, SummedCounters.from_expositions(texts))
    assert view["by_key"] == {
        "master": {"requests": 1, "tokens_in": 10, "tokens_out": 5, "cost": 15.0},
        "team-a": {"requests": 3, "tokens_in": 11, "tokens_out": 11, "cost": 22.0},
    }
    assert (view["written"], view["pending"], view["dropped"], view["workers"]) == (4, 0, 0, 2)
    alone = usage_view(ledgers[1], budgets)  # a single process: its own, as before
    assert alone["by_key"] == {"team-a": {"requests": 2, "tokens_in": 8, "tokens_out": 7, "cost": 15.0}}
    assert (alone["written"], alone["workers"]) == (2, 1)
    assert counter_samples(texts[1], "aifabric_usage_requests_total") == {("team-a",): 2}


def worker_counts(directory: Path) -> list[dict[tuple[str, ...], int]]:
    """Each worker's own tokens by key and direction, from the files the workers write for /metrics in
    their state `directory` (a worker's file is its index's: metrics-0.prom, metrics-1.prom)."""
    out = []
    for index in range(2):
        path = directory / f"metrics-{index}.prom"
        text = path.read_text() if path.exists() else ""
        out.append(counter_samples(text, "aifabric_usage_tokens_total"))
    return out


def test_status_usage_adds_up_to_the_ledger_and_metrics_whichever_worker_answers(
    tmp_path: Path, fb: FakeBackend
) -> None:
    ledger = tmp_path / "usage.db"
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(
        fabric_text(fb.url, price=PRICE, extra=f'usage: "{ledger}"\nkeys: "sqlite://{tmp_path / "keys.db"}"')
    )
    team_key = cli("keys", "create", "--name", "team-a", "--config", str(fabric_file)).strip()
    keys = {"master": MASTER, "team-a": team_key}
    serve = serve_workers(fabric_file, tmp_path, 2)  # tmp_path is its XDG_RUNTIME_DIR
    state_dir = tmp_path / "aifabric" / str(serve.port)
    try:
        serve.wait_ready()
        sent = 0

        def both_workers_served_both_keys() -> bool:
            """Four more requests (a client, so a connection, each: the kernel spreads them), then
            whether each worker has counted requests of both keys."""
            nonlocal sent
            for name, key in (*keys.items(), *keys.items()):
                with openai.OpenAI(base_url=serve.url + "/v1", api_key=key, max_retries=0) as c:
                    words = "one two three" if name == "master" else "four five six seven eight"
                    c.chat.completions.create(
                        model="chat-fast", messages=[{"role": "user", "content": words}]
                    )
                    sent += 1
            return all(all((name, "in") in counts for name in keys) for counts in worker_counts(state_dir))

        wait_until(both_workers_served_both_keys, "both workers counted requests of both keys", limit=60)

        def ledger_totals() -> dict[str, dict[str, Any]]:
            report = json.loads(cli("usage", "--config", str(fabric_file), "--by", "key", "--json"))
            return {row["key"]: row for row in report["rows"]}

        wait_until(
            lambda: sum(row["requests"] for row in ledger_totals().values()) == sent,
            f"the {sent} requests in the ledger",
        )
        totals = ledger_totals()
        assert set(totals) == set(keys)
        seen: list[dict[str, Any]] = []

        def matches(usage: dict[str, Any]) -> bool:
            if set(usage["by_key"]) != set(keys):
                return False
            for name, figures in usage["by_key"].items():
                row = totals[name]
                if [figures[f] for f in ("requests", "tokens_in", "tokens_out")] != [
                    row[f] for f in ("requests", "tokens_in", "tokens_out")
                ] or figures["cost"] != pytest.approx(row["cost"], abs=1e-5):
                    return False
            return (usage["written"], usage["pending"], usage["dropped"], usage["write_failures"]) == (
                sent,
                0,
                0,
                0,
            ) and usage["workers"] == 2

        def settled() -> bool:
            seen.append(admin_get(serve.url, "/status").json())
            return matches(seen[-1]["usage"])

        try:
            wait_until(settled, "a /status refresh shows every worker's usage, as the ledger has it")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nlast /status usage: {seen[-1]['usage']}\nledger: {totals}"
            ) from None
        settled_at = len(seen)
        pids: set[int] = set()

        def both_answered() -> bool:
            seen.append(admin_get(serve.url, "/status").json())
            pids.add(seen[-1]["gateway"]["pid"])
            return len(pids) == 2 and len(seen) - settled_at >= 10

        wait_until(both_answered, "both workers answered /status")
        for view in seen[settled_at:]:
            assert matches(view["usage"]), (view["gateway"]["pid"], view["usage"], totals)

        text = admin_get(serve.url, "/metrics").text
        tokens = counter_samples(text, "aifabric_usage_tokens_total")
        requests = counter_samples(text, "aifabric_usage_requests_total")
        costs = samples(text, "aifabric_usage_cost_total")
        by_key = seen[-1]["usage"]["by_key"]
        for name in keys:
            assert requests[(name,)] == by_key[name]["requests"]
            assert (tokens[(name, "in")], tokens[(name, "out")]) == (
                by_key[name]["tokens_in"],
                by_key[name]["tokens_out"],
            )
            assert costs[(name,)] == pytest.approx(by_key[name]["cost"], abs=1e-6)
        assert team_key not in json.dumps(seen[-1]) and team_key not in text  # names only, never a key
    finally:
        serve.stop()
