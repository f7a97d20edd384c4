"""Prices, budgets and the usage ledger in the fabric file: read as written, mistakes located."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import BASE, Problems, Write, line_of

from aifabric.config.load import load_config
from aifabric.config.money import Budget, BudgetPeriod, Price, parse_budget
from aifabric.config.show import config_to_dict

PRICED = BASE.replace(
    "targets: [{backend: box-vllm, model: qwen}]",
    "targets: [{backend: box-vllm, model: qwen, price: {input: 2.5, output: 10}}]",
).replace(
    'box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1"}',
    'box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1", budget: 50/month}',
)


def test_prices_budgets_and_the_ledger_load_as_written(write: Write) -> None:
    config = load_config(write(PRICED + "usage: postgresql://fabric:pw@db.example:5432/usage\n"))
    assert config.roles["chat-fast"].targets[0].price == Price(2.5, 10.0)
    assert config.roles["chat-deep"].targets[0].price == Price()  # not written: free (a local model)
    assert config.backends["box-vllm"].budget == Budget(50.0, BudgetPeriod.MONTH)
    assert config.backends["box-embed"].budget is None
    shown = config_to_dict(config)
    assert shown["backends"]["box-vllm"]["budget"] == "50/month"  # as written, so it reads back
    assert shown["usage"] == "postgresql://fabric:********@db.example:5432/usage"  # the password never


@pytest.mark.parametrize(
    ("written", "says"),
    [("50/week", "'week' is not one of day, month"), ("fifty/month", "is not AMOUNT/PERIOD")],
)
def test_a_wrong_budget_is_located_with_the_fix(problems: Problems, written: str, says: str) -> None:
    text = PRICED.replace("budget: 50/month", f"budget: {written}")
    [problem] = problems(text)
    assert problem.line == line_of(text, f"budget: {written}")
    assert says in problem.fix and "50/month" in problem.fix


def test_a_negative_price_is_located(problems: Problems) -> None:
    text = PRICED.replace("output: 10", "output: -1")
    [problem] = problems(text)
    assert problem.line == line_of(text, "output: -1")
    assert "roles.chat-fast.targets[0].price.output" in problem.message


def test_a_ledger_url_of_another_kind_is_refused(problems: Problems) -> None:
    text = BASE + "usage: mysql://db.example/usage\n"
    [problem] = problems(text)
    assert problem.line == line_of(text, "usage: mysql")
    assert "postgresql://" in problem.fix


def test_a_relative_ledger_path_is_beside_the_fabric_file(write: Write, tmp_path: Path) -> None:
    from aifabric.tenancy.ledger import ledger_opener

    config = load_config(write(BASE + "usage: ledger/usage.db\n"))
    opener = ledger_opener(config)
    assert opener is not None
    store = opener()
    try:
        assert store.where == str(tmp_path / "ledger" / "usage.db")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("text", "budget"),
    [("50/month", Budget(50, BudgetPeriod.MONTH)), ("$5.5 / day", Budget(5.5, BudgetPeriod.DAY))],
)
def test_budgets_parse(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget
    assert str(Budget(0.00001, BudgetPeriod.DAY)) == "0.00001/day"
