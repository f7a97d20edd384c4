"""`aifabric usage` as an operator runs it (another process): a table, CSV, JSON; mistakes said plainly."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path

import pytest

from aifabric.tenancy.ledger import UsageRow
from aifabric.tenancy.ledger.sqlite import SqliteLedger
from cli_process import aifabric

FABRIC = """
backends: {b: {kind: vllm, url: "http://127.0.0.1:9/v1"}}
roles: {chat: {kind: chat, targets: [{backend: b, model: m}]}}
usage: usage.db
"""


def usage(fabric: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return aifabric("usage", "--config", str(fabric), *args)


@pytest.fixture
def fabric(tmp_path: Path) -> Path:
    path = tmp_path / "fabric.yaml"
    path.write_text(FABRIC)
    now = time.time()
    store = SqliteLedger(tmp_path / "usage.db")
    store.write(
        [
            UsageRow(
                now - 3600, "app", "chat", "b", "m", "/chat/completions", 30, 10, False, 0.5, 12.0, 200, "r1"
            ),
            UsageRow(
                now - 60, "app", "chat", "b", "m", "/chat/completions", 20, 5, True, 0.25, 9.0, 200, "r2"
            ),
            UsageRow(now - 30, "ops", "chat", "", "", "/chat/completions", 0, 0, False, 0.0, 0.1, 429, "r3"),
            UsageRow(
                now - 9 * 86400,
                "old",
                "chat",
                "b",
                "m",
                "/chat/completions",
                1,
                1,
                False,
                9.0,
                1.0,
                200,
                "r0",
            ),
        ]
    )
    store.close()
    return path


def test_the_table_sums_by_key_since_seven_days(fabric: Path) -> None:
    done = usage(fabric)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "KEY",
        "REQUESTS",
        "TOKENS",
        "IN",
        "TOKENS",
        "OUT",
        "COST",
        "ESTIMATED",
        "ERRORS",
    ]
    assert lines[1].split() == ["app", "2", "50", "15", "0.7500", "1", "0"]
    assert lines[2].split() == ["ops", "1", "0", "0", "0.0000", "0", "1"]
    assert lines[3].split()[:2] == ["total", "3"]  # the row of 9 days ago is not in the last 7
    assert "usage.db" in lines[-1]


def test_csv_and_json_by_other_groupings(fabric: Path) -> None:
    done = usage(fabric, "--by", "backend", "--since", "2h", "--csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["backend"], r["requests"], r["cost"]) for r in rows] == [
        ("", "1", "0.000000"),
        ("b", "2", "0.750000"),
    ]
    report = json.loads(usage(fabric, "--by", "day", "--since", "30d", "--json").stdout)
    assert report["total"]["requests"] == 4 and len(report["rows"]) >= 2
    assert all(len(r["day"]) == 10 for r in report["rows"])  # YYYY-MM-DD


def test_mistakes_are_said_with_the_fix(fabric: Path, tmp_path: Path) -> None:
    done = usage(fabric, "--since", "a week")
    assert done.returncode != 0 and "--since 'a week' is not a duration: write e.g. 7d" in done.stderr
    assert "Traceback" not in done.stderr
    off = tmp_path / "off.yaml"
    off.write_text(FABRIC.replace("usage: usage.db", 'usage: "off"'))
    done = usage(off)
    assert done.returncode != 0 and "usage: off" in done.stderr
