from __future__ import annotations

from collections.abc import Iterator

import pytest
from state_support import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()
