"""The exchange round of shared rate-limit counts, over an in-test exchange (the Redis and file ones are
driven by real processes in test_shared_limits): what a process publishes, what it applies, and its
share when the exchange fails."""

from __future__ import annotations

import asyncio

from aifabric.config.schema import RoleLimits
from aifabric.errors import StateStoreError
from aifabric.tenancy.admission import Admission
from aifabric.tenancy.limitsync import Counts, LimitExchange, LimitSync
from aifabric.tenancy.principal import Principal

T0 = 1_800_000_000.0 - (1_800_000_000.0 % 60)
KEY = ("key", "app", "requests")


class Peers(LimitExchange):
    """Two other processes whose counts the test sets; `down` makes the exchange fail."""

    kind = "test"

    def __init__(self) -> None:
        self.others: Counts = {}
        self.published: list[Counts] = []
        self.down = False

    async def exchange(self, mine: Counts, now: float) -> tuple[int, Counts]:
        if self.down:
            raise StateStoreError("the store is away")
        self.published.append(mine)
        return 3, self.others

    async def close(self) -> None:
        pass


def test_a_round_publishes_this_process_counts_and_applies_the_others() -> None:
    now = [T0 + 10]
    syncs: list[LimitSync] = []

    def share() -> float:  # as the gateway wires it: the sync, made after the admission, decides
        return syncs[0].share()

    admission = Admission(wall=lambda: now[0], share=share)
    peers = Peers()
    sync = LimitSync(admission, peers, wall=lambda: now[0], processes=3)
    syncs.append(sync)
    key = Principal("app", rpm=6)
    index = int(T0 // 60)

    assert sync.share() == 1 / 3, "before the first round: this process's share"
    assert admission.admit(key, "r", RoleLimits(), {}) is not None
    peers.others = {KEY: {index: 4.0}, ("key", "other", "tokens"): {index: 9.0}}
    asyncio.run(sync.round())
    assert peers.published[-1] == {KEY: {index: 1.0, index - 1: 0.0}}
    assert sync.share() == 1.0 and sync.processes == 3
    assert admission.windows[KEY].shared_cur == 4.0
    assert ("key", "other", "tokens") in admission.windows, "others' limits are known before first use"
    assert admission.admit(key, "r", RoleLimits(), {}) is not None  # 1 + 4 others + 1 = 6
    assert admission.windows[KEY].used(now[0]) == 6.0

    peers.down = True
    now[0] += 1
    asyncio.run(sync.round())
    assert not sync.reachable and "away" in sync.error
    assert sync.status()["share"] == round(1 / 3, 3)
    peers.down = False
    asyncio.run(sync.round())
    assert sync.reachable and sync.share() == 1.0
