"""Each test of the listener and the client once per event loop (see http_support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_support import LOOPS, use


@pytest.fixture(autouse=True, params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    use(request.param)
    yield
