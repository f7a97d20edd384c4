"""Durations, sizes and env files, parsed on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifabric.config.durations import format_duration, parse_duration, parse_size
from aifabric.config.env import EnvResolver, parse_env_text


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", "1x", "", "s", "1h-5m", "nan", True, [1]])
def test_durations_that_do_not_parse(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["32 MiBB", "-1", "1.5B", "MB", False, 1.5])
def test_sizes_that_do_not_parse(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(("seconds", "text"), [(300.0, "5m"), (0.25, "250ms"), (5400.0, "90m"), (0.0, "0s")])
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_env_file_lines_that_are_not_key_value() -> None:
    values, errors = parse_env_text('GOOD=1\nno equals sign\nOPEN=\'unclosed\nDQ="x" trailing\n9BAD=1\n')
    assert values == {"GOOD": "1"}
    assert [e.line for e in errors] == [2, 3, 4, 5]


def test_env_file_is_read_only_when_the_environment_lacks_a_variable(tmp_path: Path) -> None:
    missing = tmp_path / "absent.env"
    resolver = EnvResolver({"A": "from-env"}, env_file=missing)
    assert resolver.substitute("${A}", "k", 1) == "from-env"
    assert not resolver.env_file_consulted
    assert resolver.substitute("${B}", "k", 2) is None
    assert resolver.env_file_consulted and resolver.env_file_missing
    assert [(m.name, m.reason) for m in resolver.misses] == [("B", "unset")]
