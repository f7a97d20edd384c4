"""Budgets, prices and token counts as pure policy: an injected wall clock, a real SQLite ledger."""

from __future__ import annotations

import calendar
from pathlib import Path

from aifabric.alerts.budget import BudgetFact, budget_alerts
from aifabric.alerts.rules import AlertTracker
from aifabric.config.load import load_config_text
from aifabric.config.money import Budget, BudgetPeriod, period_start
from aifabric.tenancy.budget import BudgetTracker
from aifabric.tenancy.ledger import Pending, UsageRow
from aifabric.tenancy.ledger.sqlite import SqliteLedger
from aifabric.tenancy.pricing import Pricing
from aifabric.tenancy.tokens import parse_usage, reported_usage, total_tokens

FABRIC = """
backends:
  cloud: {kind: openai, url: "https://api.example/v1", budget: 1/day}
roles:
  chat:
    kind: chat
    targets: [{backend: cloud, model: gpt, price: {input: 1000, output: 2000}}]
"""
NOON = float(calendar.timegm((2026, 11, 30, 12, 0, 0)))


def row(ts: float, cost: float, key: str = "app", backend: str = "cloud") -> UsageRow:
    return UsageRow(ts, key, "chat", backend, "gpt", "/chat/completions", 10, 10, False, cost, 1.0, 200, "r")


def test_periods_start_at_midnight_and_on_the_first_utc() -> None:
    assert period_start(BudgetPeriod.DAY, NOON) == calendar.timegm((2026, 11, 30, 0, 0, 0))
    assert period_start(BudgetPeriod.MONTH, NOON) == calendar.timegm((2026, 11, 1, 0, 0, 0))


def test_a_backend_over_budget_is_blocked_until_the_next_day(tmp_path: Path) -> None:
    config = load_config_text(FABRIC, "fabric.yaml", environ={})
    now = [NOON]
    store = SqliteLedger(tmp_path / "usage.db")
    store.write([row(NOON - 86400, 5.0)])  # yesterday's spend does not count today
    tracker = BudgetTracker(config, wall=lambda: now[0])
    tracker.refresh(store)
    assert tracker.blocked_backends == {}
    spent = [row(NOON, 0.6), row(NOON + 1, 0.5)]
    store.write(spent)
    tracker.add(spent)  # this process's rows, at once
    assert "cloud" in tracker.blocked_backends
    assert "has spent 1.1 of its budget of 1/day" in tracker.blocked_backends["cloud"]
    now[0] = NOON + 86400  # the next day: the refresh from the ledger starts a new period
    tracker.refresh(store)
    assert tracker.blocked_backends == {}
    store.close()


def test_a_key_over_its_budget_is_told_so() -> None:
    tracker = BudgetTracker(load_config_text(FABRIC, "fabric.yaml", environ={}), wall=lambda: NOON)
    budget = Budget(2.0, BudgetPeriod.MONTH)
    assert tracker.key_over("app", budget) is None
    tracker.add([row(NOON, 1.5), row(NOON, 0.5, key="other")])
    assert tracker.key_over("app", budget) is None
    tracker.add([row(NOON, 0.5)])
    assert tracker.key_over("app", budget) == (
        "the key 'app' has spent 2 of its budget of 2/month (resets at the start of the next month, UTC)"
    )
    assert {(u.kind, u.name) for u in tracker.uses()} == {("backend", "cloud"), ("key", "app")}


def test_the_budget_alert_warns_at_80_percent_and_goes_critical_at_100() -> None:
    tracker = AlertTracker()
    assert tracker.update(budget_alerts([BudgetFact("key", "app", 0.7, 1.0, "day")]), 1.0) == []
    [warn] = tracker.update(budget_alerts([BudgetFact("key", "app", 0.85, 1.0, "day")]), 2.0)
    assert (warn.status, warn.alert.rule, warn.alert.severity.label) == ("firing", "budget", "warning")
    assert "85%" in warn.alert.summary and "at 100% its requests get 429" in warn.alert.fix
    assert "`aifabric keys update app --budget AMOUNT/day`" in warn.alert.fix  # a command that exists
    [backend] = budget_alerts([BudgetFact("backend", "cloud", 0.9, 1.0, "month")])
    assert "`backends.cloud.budget` in the fabric file" in backend.fix
    resolved, critical = tracker.update(budget_alerts([BudgetFact("key", "app", 1.0, 1.0, "day")]), 3.0)
    assert (resolved.status, critical.status, critical.alert.severity.label) == (
        "resolved",
        "firing",
        "critical",
    )


def test_rows_take_the_backends_figures_else_count_and_say_so() -> None:
    pricing = Pricing.from_config(load_config_text(FABRIC, "fabric.yaml", environ={}))
    base = Pending(NOON, "app", "chat", "cloud", "gpt", "/chat/completions", 200, 0.25, "r1")
    given = pricing.row(base._replace(usage=b'"usage":{"prompt_tokens":30,"completion_tokens":5}}'))
    assert (given.tokens_in, given.tokens_out, given.estimated) == (30, 5, False)
    assert given.cost == (30 * 1000 + 5 * 2000) / 1e6
    assert given.latency_ms == 250.0
    payload = {"messages": [{"role": "user", "content": "x" * 116}]}
    counted = pricing.row(base._replace(counted=(0, 12), payload=payload))
    assert (counted.tokens_in, counted.tokens_out, counted.estimated) == (30, 12, True)
    body = b'{"choices":[{"message":{"role":"assistant","content":"' + b"y" * 40 + b'"}}]}'
    answered = pricing.row(base._replace(payload=payload, output=body))
    assert (answered.tokens_in, answered.tokens_out, answered.estimated) == (30, 10, True)
    # Counts the forwarder already read are the backend's own: taken as they are, not estimated.
    read = pricing.row(base._replace(reported=(30, 5)))
    assert (read.tokens_in, read.tokens_out, read.estimated, read.cost) == (30, 5, False, given.cost)


def test_usage_objects_of_both_dialects_parse() -> None:
    assert parse_usage(b'"usage": {"prompt_tokens": 7, "total_tokens": 7}}') == (7, 0)
    assert parse_usage(b'"usage":{"input_tokens":3,"output_tokens":4}}') == (3, 4)
    assert parse_usage(b'"usage":{"completion_tokens":4}},"prompt_tokens":9') is None  # not its own


def test_nested_usage_objects_and_total_tokens_read_from_the_tail() -> None:
    # OpenAI's usage holds details objects; Anthropic's a cache_creation object, nested twice here.
    openai = (
        b'{"id":"c","choices":[{"message":{"content":"a {b} c"}}],"usage":{"prompt_tokens":11,'
        b'"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":5,'
        b'"completion_tokens_details":{"reasoning_tokens":0},"total_tokens":16}}'
    )
    assert parse_usage(openai[openai.rfind(b'"usage"') :]) == (11, 5)
    assert total_tokens(openai) == 16
    anthropic = b'"usage":{"input_tokens":3,"cache_creation":{"a":{"b":1}},"output_tokens":4}}'
    assert parse_usage(anthropic) == (3, 4)
    # Anthropic's usage has no total: the tokens-per-minute limits count input plus output.
    assert total_tokens(b'{"content":[],' + anthropic) == 7
    responses = b'{"output":[],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":9}}'
    assert total_tokens(responses) == 9
    assert total_tokens(b'{"choices":[]}') == -1
    # One flat object (the fast path) and several (an Anthropic stream) read alike.
    start = b'"usage":{"input_tokens":25,"output_tokens":1}}}\n\ndata: {"type":"message_delta",'
    assert parse_usage(start + b'"usage":{"output_tokens":15}}') == (25, 15)
    assert parse_usage(b'"usage":{"prompt_tokens":-3,"completion_tokens":2}') is None
    assert parse_usage(b'"usage":{"prompt_tokens":true}') is None
    assert parse_usage(b'"usage":{"prompt_tokens":4,"completion_tokens":null}') == (4, 0)
    assert parse_usage(b'"usage": null, "x": {"prompt_tokens": 4}') is None
    assert total_tokens(b'{"usage":{"prompt_tokens":1,"total_tokens":true}}') == -1
    assert total_tokens(b'{"choices":[]}') == -1
    assert total_tokens(b'{"usage":{"prompt_tokens":1,"total_tokens":3') == -1  # cut off: no figure


def reported(body: bytes) -> tuple[int, int, int] | None:
    return reported_usage(body, body.rfind(b'"usage"'))


def test_a_whole_answers_flat_usage_is_read_once_with_its_total() -> None:
    # What the forwarder reads on the request path, for the ledger's row and a tokens-per-minute limit.
    vllm = b'{"choices":[],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}'
    assert reported(vllm) == (24, 8, 32)
    spaced = b'{"choices": [], "usage": {"prompt_tokens": 7, "total_tokens": 7, "prompt_tokens_details": null'
    spaced += b"}}"
    assert reported(spaced) == (7, 0, 7)
    # Anthropic's flat usage has no total: input plus output, as total_tokens counts it.
    assert reported(b'{"content":[],"usage":{"input_tokens":3,"output_tokens":4}}') == (3, 4, 7)
    assert reported(b'{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":true}}') == (1, 2, 3)
    # Not one flat object of counts: None, and the ledger's thread parses the tail (nested details).
    nested = b'{"usage":{"prompt_tokens":11,"prompt_tokens_details":{"cached_tokens":2},"total_tokens":16}}'
    assert reported(nested) is None
    assert parse_usage(nested[nested.rfind(b'"usage"') :]) == (11, 0)
    assert reported(b'{"usage":{"completion_tokens":4}}') is None  # no prompt count
    assert reported(b'{"usage":{"prompt_tokens":-3}}') is None
    assert reported(b'{"usage": null, "x": {"prompt_tokens": 4}}') is None  # not the usage's own
    assert reported(b'{"usage":{"prompt_tokens":1,"total_tokens":3') is None  # cut off
    assert reported(b'{"usage":"none","prompt_tokens":4}') is None
