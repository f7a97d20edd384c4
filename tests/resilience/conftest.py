"""Fixtures: a fake backend behind a link the test can cut (fake backends on loopback: `backend`, and the
gateway: `start_gateway`, in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns_support import Partitionable, namespaced_host


@pytest.fixture
def remote() -> Iterator[Partitionable]:
    """A fake vLLM on a host of its own (a network namespace), whose link the test can cut and heal."""
    yield from namespaced_host()
