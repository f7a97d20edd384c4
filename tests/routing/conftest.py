"""Fixtures of the routing tests."""

from __future__ import annotations

import pytest
from routing_support import MakeTarget, target_factory


@pytest.fixture
def make_target() -> MakeTarget:
    return target_factory()
