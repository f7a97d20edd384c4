"""State shared by gateway workers and replicas: the probe lease, backend health, ejections.

See docs/state.md. A gateway calls `open_sync(...)` once and runs the returned `StateSync` beside its
listener; with `state: memory` and one worker there is nothing to share and it returns None.
"""

from aifabric.state.base import Ejection, HealthSnapshot, StateStore
from aifabric.state.factory import check_state, open_response_store, open_store, open_sync
from aifabric.state.local import LocalStore, default_state_dir
from aifabric.state.memory import MemoryStore
from aifabric.state.redis import RedisStore
from aifabric.state.sync import StateSync

__all__ = [
    "Ejection",
    "HealthSnapshot",
    "LocalStore",
    "MemoryStore",
    "RedisStore",
    "StateStore",
    "StateSync",
    "check_state",
    "default_state_dir",
    "open_response_store",
    "open_store",
    "open_sync",
]
