"""The exchange round of shared rate-limit counts, over an in-test exchange and the file one (Redis
and many workers are driven by real processes in test_shared_limits): what a process publishes, what
it applies, its share when the exchange fails, and what a round does when someone's counts are late."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from aifabric.config.schema import RoleLimits
from aifabric.errors import RateLimited, StateStoreError
from aifabric.tenancy.admission import Admission
from aifabric.tenancy.limitsync import Counts, FileExchange, LimitExchange, LimitSync, View, turn_of
from aifabric.tenancy.principal import Principal

T0 = 1_800_000_000.0 - (1_800_000_000.0 % 60)
KEY = ("key", "app", "requests")


class Peers(LimitExchange):
    """Other processes (two, or `processes` less this one) whose counts the test sets; `down` makes
    the exchange fail; `meanwhile` runs while it is under way, after this process published (as a
    worker goes on admitting while its file exchange runs in a thread)."""

    kind = "test"

    def __init__(self, processes: int = 3) -> None:
        self.others: Counts = {}
        self.published: list[Counts] = []
        self.down = False
        self.rank = 0
        self.processes = processes
        self.meanwhile: Callable[[], None] | None = None
        self.fresh = self.aligned = True  # every other published this round (and on its tick)

    async def exchange(self, mine: Counts, now: float) -> View:
        if self.down:
            raise StateStoreError("the store is away")
        self.published.append(mine)
        if self.meanwhile is not None:
            self.meanwhile()
        return View(self.processes, self.rank, self.others, fresh=self.fresh, aligned=self.aligned)

    async def close(self) -> None:
        pass


def test_a_round_publishes_this_process_counts_and_applies_the_others() -> None:
    now = [T0 + 10]
    # As the gateway wires it: the sync, made after the admission, tells it its share.
    admission = Admission(wall=lambda: now[0])
    peers = Peers()
    sync = LimitSync(admission, peers, wall=lambda: now[0], processes=3)
    key = Principal("app", rpm=6)
    index = int(T0 // 60)

    assert sync.share() == 1 / 3, "before the first round: this process's share"
    assert admission.admit(key, "r", RoleLimits(), {}) is not None
    peers.others = {KEY: {index: 4.0}, ("key", "other", "tokens"): {index: 9.0}}
    # This process's turn: its first request after the round needs only the room left (1 of 6), not
    # its third of it (tenancy.ratelimit).
    peers.rank = turn_of(round(now[0] / 0.25), 3)
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


class Board:
    """The exchange of N simulated processes whose rounds fall at the same instants (as the gateway's
    do: rounds are aligned to the clock): each publishes, then reads what all published in that round."""

    def __init__(self, names: list[str]) -> None:
        self.names = sorted(names)
        self.published: dict[str, Counts] = {}
        self.barrier: asyncio.Barrier | None = None  # made in the round's event loop (run_rounds)

    def exchange(self, name: str) -> LimitExchange:
        board = self

        class Member(LimitExchange):
            kind = "test"

            async def exchange(self, mine: Counts, now: float) -> View:
                board.published[name] = mine
                assert board.barrier is not None
                await board.barrier.wait()
                others: Counts = {}
                for other, counts in board.published.items():
                    if other != name:
                        for scope, by_index in counts.items():
                            into = others.setdefault(scope, {})
                            for index, count in by_index.items():
                                into[index] = into.get(index, 0.0) + count
                await board.barrier.wait()  # everyone read this round before anyone publishes again
                return View(len(board.names), board.names.index(name), others)

            async def close(self) -> None:
                pass

        return Member()


class Process:
    """One simulated gateway process: its admission and its limit sync, on the test's clock."""

    def __init__(self, board: Board, name: str, clock: list[float]) -> None:
        self.admission = Admission(wall=lambda: clock[0])  # its share: told by the sync
        self.sync = LimitSync(self.admission, board.exchange(name), wall=lambda: clock[0], processes=2)

    def request(self, key: Principal, payload: dict[str, object]) -> bool:
        try:
            ticket = self.admission.admit(key, "r", RoleLimits(), payload)
        except RateLimited:
            return False
        assert ticket is not None
        return True

    def used(self, scope: tuple[str, str, str], now: float) -> float:
        """What this process itself counted in the sliding window at `now` (no one else's)."""
        window = self.admission.windows.get(scope)
        if window is None:
            return 0.0
        window.used(now)
        fraction = now / window.window - window.index
        return window.mine_prev * (1.0 - fraction) + window.mine_cur


def run_rounds(board: Board, processes: list[Process]) -> None:
    async def together() -> None:
        board.barrier = asyncio.Barrier(len(processes))
        await asyncio.gather(*(p.sync.round() for p in processes))

    asyncio.run(together())


@pytest.mark.parametrize("limit", [1, 2, 5, 10])
def test_two_processes_never_admit_more_than_the_rpm_together_across_syncs(limit: int) -> None:
    clock = [T0 + 0.001]
    board = Board(["a", "b"])
    a, b = Process(board, "a", clock), Process(board, "b", clock)
    key = Principal("app", rpm=limit)
    scope = ("key", "app", "requests")
    rng = random.Random(limit)
    admitted = 0
    run_rounds(board, [a, b])  # the first round: both know of each other
    # Three minutes of bursts on both, 4 rounds a second, the window sliding across two boundaries.
    for step in range(3 * 60 * 4):
        for _ in range(rng.randrange(0, 6)):
            clock[0] += 0.001
            admitted += (a if rng.random() < 0.5 else b).request(key, {})
            together = a.used(scope, clock[0]) + b.used(scope, clock[0])
            assert together <= limit + 1e-9, f"{together} counted by both at step {step}, limit {limit}"
        clock[0] = T0 + 0.001 + (step + 1) * 0.25
        run_rounds(board, [a, b])
    # A sliding window lets about the limit through per minute (an admission early in a minute
    # fades out only by the end of the next): over three minutes, at least twice the limit.
    assert admitted >= 2 * limit, f"only {admitted} admitted in 3 minutes, limit {limit}"


def test_one_busy_process_of_two_reaches_the_whole_rpm_within_a_few_rounds() -> None:
    clock = [T0 + 0.001]
    board = Board(["a", "b"])
    a, b = Process(board, "a", clock), Process(board, "b", clock)
    key = Principal("app", rpm=5)
    run_rounds(board, [a, b])
    admitted = 0
    for step in range(12):  # 3 s of a client that keeps asking the same process
        for _ in range(5):
            admitted += a.request(key, {})
        clock[0] = T0 + 0.001 + (step + 1) * 0.25
        run_rounds(board, [a, b])
    assert admitted == 5


def test_two_processes_keep_the_tpm_within_one_request_of_the_limit() -> None:
    """Tokens are not counted one by one: the process in turn may take one request beyond its part
    (tenancy.ratelimit), so together they stay within the limit plus one request's tokens."""
    clock = [T0 + 0.001]
    board = Board(["a", "b"])
    a, b = Process(board, "a", clock), Process(board, "b", clock)
    key = Principal("app", tpm=1000)
    scope = ("key", "app", "tokens")
    payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}  # 101 tokens
    rng = random.Random(7)
    run_rounds(board, [a, b])
    for _ in range(2 * 60 * 4):
        for _ in range(rng.randrange(0, 12)):
            clock[0] += 0.001
            (a if rng.random() < 0.5 else b).request(key, payload)
            assert a.used(scope, clock[0]) + b.used(scope, clock[0]) <= 1000 + 101 + 1e-9
        clock[0] = (clock[0] // 0.25 + 1) * 0.25 + 0.001
        run_rounds(board, [a, b])


def test_a_turn_ends_when_its_process_publishes_so_two_turns_never_overlap() -> None:
    # A limit of 5 over two processes, 4 used: each has half a request of headroom, and the turn's
    # holder may let in one. If it has not by its next round, what it lets in after publishing would
    # be in no count the next holder reads: that one would see room for another (6 of 5).
    now = [T0 + 10.0]
    admission = Admission(wall=lambda: now[0])
    during: list[bool] = []
    peer = Peers(processes=2)
    sync = LimitSync(admission, peer, wall=lambda: now[0], processes=2)
    key = Principal("app", rpm=5)
    index = int(T0 // 60)
    for _ in range(2):
        assert admission.admit(key, "r", RoleLimits(), {}) is not None
    peer.others = {KEY: {index: 2.0}}
    tick = round(now[0] / 0.25)
    peer.rank = turn_of(tick, 2)  # this process holds the turn of this round
    asyncio.run(sync.round())
    now[0] = (tick + 1) * 0.25 + 0.001  # the next round, the turn not used

    def admit_one() -> None:
        try:
            admission.admit(key, "r", RoleLimits(), {})
        except RateLimited:
            during.append(False)
        else:
            during.append(True)

    peer.meanwhile = admit_one
    asyncio.run(sync.round())
    assert during == [False], "a turn used after its process published its counts"
    assert admission.windows[KEY].used(now[0]) == 4.0


def _admits(admission: Admission, key: Principal) -> bool:
    try:
        admission.admit(key, "r", RoleLimits(), {})
    except RateLimited:
        return False
    return True


def test_a_round_that_lacks_someone_s_counts_of_its_tick_splits_nothing() -> None:
    # rpm 10 over two processes, nothing used: this one's part is 5. It admits 4; the next round's
    # exchange lacks the other's counts of that tick (stalled): a split from its older counts would
    # hand out what it may have admitted since, so this process keeps its part (1 more), until a
    # round reads everyone's counts again.
    now = [T0 + 10.0]
    admission = Admission(wall=lambda: now[0])
    peer = Peers(processes=2)
    peer.rank = 1 - turn_of(round(now[0] / 0.25), 2)  # not this process's turn
    sync = LimitSync(admission, peer, wall=lambda: now[0], processes=2)
    key = Principal("app", rpm=10)
    index = int(T0 // 60)
    assert _admits(admission, key)  # the first use sets the limit: its part is half the headroom
    asyncio.run(sync.round())
    assert [_admits(admission, key) for _ in range(5)] == [True] * 4 + [False]  # 5 of its 5

    peer.fresh = peer.aligned = False
    now[0] += 0.25
    peer.rank = 0
    asyncio.run(sync.round())
    assert not _admits(admission, key), "a split from a round-old view of the other's counts"
    assert admission.windows[KEY].shared_cur == 0.0

    peer.fresh = peer.aligned = True
    peer.others = {KEY: {index: 1.0}}
    now[0] += 0.25
    peer.rank = 1 - turn_of(round(now[0] / 0.25), 2)
    asyncio.run(sync.round())
    # 10 - 5 - 1 = 4 left, a part of 2.
    assert [_admits(admission, key) for _ in range(3)] == [True, True, False]


def test_the_turn_goes_only_to_a_round_in_which_all_published_on_its_tick() -> None:
    # rpm 5 over two processes, 4 used: the part is half a request; the turn lets one in. Rounds of
    # two processes that fell on different ticks could each hold a turn: none is given then.
    now = [T0 + 10.0]
    admission = Admission(wall=lambda: now[0])
    peer = Peers(processes=2)
    sync = LimitSync(admission, peer, wall=lambda: now[0], processes=2)
    key = Principal("app", rpm=5)
    index = int(T0 // 60)
    assert [_admits(admission, key) for _ in range(2)] == [True, True]
    peer.others = {KEY: {index: 2.0}}
    peer.rank = turn_of(round(now[0] / 0.25), 2)
    peer.aligned = False  # the other's counts are of a later tick
    asyncio.run(sync.round())
    assert not _admits(admission, key)
    now[0] += 0.25
    peer.rank = turn_of(round(now[0] / 0.25), 2)
    peer.aligned = True
    asyncio.run(sync.round())
    assert _admits(admission, key) and not _admits(admission, key)


def _publish_as_another_worker(directory: Path, at: float, count: float) -> None:
    index = int(at // 60)
    text = orjson.dumps({"at": at, "counts": {"key:app:requests": {str(index): count}}})
    (directory / "rl-1.json").write_bytes(text)  # pid 1: never a test's own


def test_the_file_exchange_waits_for_the_other_worker_s_counts_of_the_tick(tmp_path: Path) -> None:
    now = T0 + 10.0
    mine = FileExchange(tmp_path)
    _publish_as_another_worker(tmp_path, now - 0.25, 1.0)  # its last round's

    def later() -> None:  # it is busy: its round of this tick publishes 50 ms late
        time.sleep(0.05)
        _publish_as_another_worker(tmp_path, now, 3.0)

    writer = threading.Thread(target=later)
    writer.start()
    view = asyncio.run(mine.exchange({KEY: {int(now // 60): 2.0}}, now))
    writer.join()
    assert view.fresh and view.aligned and view.processes == 2
    assert view.others[KEY][int(now // 60)] == 3.0
    assert orjson.loads((tmp_path / f"rl-{os.getpid()}.json").read_bytes())["at"] == now


def test_the_file_exchange_says_when_a_worker_did_not_publish_this_round(tmp_path: Path) -> None:
    now = T0 + 10.0
    _publish_as_another_worker(tmp_path, now - 0.25, 1.0)  # stalled after its last round
    started = time.monotonic()
    view = asyncio.run(FileExchange(tmp_path).exchange({}, now))
    assert time.monotonic() - started >= 0.8 * 0.25  # it waited for it
    assert not view.fresh and not view.aligned
    assert view.processes == 2 and view.others[KEY][int(now // 60)] == 1.0  # read as it is
    # A worker a round ahead (its round fell on the next tick): fresh, but not aligned.
    _publish_as_another_worker(tmp_path, now + 0.25, 1.0)
    view = asyncio.run(FileExchange(tmp_path).exchange({}, now))
    assert view.fresh and not view.aligned


def test_a_process_late_for_rounds_on_end_does_not_freeze_the_others_part(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A worker stopped uncleanly is counted until it has not published for 10 s, and replicas whose
    # clocks differ by more than the wait never publish on one tick: after 4 such rounds in a row a
    # process splits from the counts it has, and says so once.
    now = [T0 + 10.0]
    admission = Admission(wall=lambda: now[0])
    peer = Peers(processes=2)
    peer.rank = 1 - turn_of(round(now[0] / 0.25), 2)
    sync = LimitSync(admission, peer, wall=lambda: now[0], processes=2)
    key = Principal("app", rpm=20)
    assert _admits(admission, key)
    asyncio.run(sync.round())
    assert sum(_admits(admission, key) for _ in range(12)) == 9  # its part: half of 19, 1 used
    peer.fresh = peer.aligned = False
    with caplog.at_level("WARNING", logger="aifabric.tenancy"):
        for late in range(1, 5):
            now[0] += 0.25
            peer.rank = 1 - turn_of(round(now[0] / 0.25), 2)
            asyncio.run(sync.round())
            assert sync.status()["late_rounds"] == late
            admitted = _admits(admission, key)
            assert admitted == (late == 4), f"round {late} late: admitted {admitted}"
    warned = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert len(warned) == 1 and "4 rounds" in warned[0], warned
    peer.fresh = peer.aligned = True
    now[0] += 0.25
    asyncio.run(sync.round())
    assert sync.status()["late_rounds"] == 0


def test_a_worker_silent_for_rounds_is_read_as_it_is_and_not_waited_for(tmp_path: Path) -> None:
    # Stopped uncleanly 2 s ago: its file stays (and counts) until 10 s, but no round waits for it.
    now = T0 + 10.0
    _publish_as_another_worker(tmp_path, now - 2.0, 1.0)
    started = time.monotonic()
    view = asyncio.run(FileExchange(tmp_path).exchange({}, now))
    assert time.monotonic() - started < 0.8 * 0.25
    assert view.fresh and view.aligned and view.processes == 2
    assert view.others[KEY][int(now // 60)] == 1.0
