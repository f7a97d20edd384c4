"""Fixtures of the fabric-file tests: write a file named fabric.yaml, load it, collect its problems."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from config_support import Problems, Write

from aifabric.config.load import load_config
from aifabric.errors import ConfigError, ConfigProblem


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def write(text: str) -> Path:
        path = tmp_path / "fabric.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def problems(write: Write) -> Problems:
    """Load `text` from a file named fabric.yaml; return the problems (the load must fail)."""

    def problems(text: str, environ: Mapping[str, str] | None = None) -> list[ConfigProblem]:
        path = write(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ=environ or {})
        assert info.value.problems, "a ConfigError must carry at least one problem"
        for problem in info.value.problems:
            assert problem.fix, f"every problem says how to fix it: {problem}"
        return info.value.problems

    return problems
