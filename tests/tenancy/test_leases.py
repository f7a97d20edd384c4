"""The file locks that count a key's requests in flight across the workers (tenancy.leases): two
`FileLeases` on one directory stand for two workers (each its own open files, as each process has)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aifabric.tenancy.leases import FileLeases
from aifabric.testing.wait import wait_until


def test_two_workers_share_a_key_s_slots_and_give_them_back(tmp_path: Path) -> None:
    a, b = FileLeases(tmp_path), FileLeases(tmp_path)
    first = a.acquire("app", 2)
    second = b.acquire("app", 2)
    assert {first, second} == {0, 1}
    assert a.acquire("app", 2) is None and b.acquire("app", 2) is None, "2 in flight: the limit"
    assert a.acquire("other", 2) is not None, "another key has slots of its own"
    assert first is not None
    a.release("app", first)
    assert b.acquire("app", 2) == first
    a.close()
    b.close()


def test_a_killed_worker_s_slots_are_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from aifabric.tenancy.leases import FileLeases\n"
         f"assert FileLeases(Path({str(tmp_path)!r})).acquire('app', 1) == 0\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        leases = FileLeases(tmp_path)
        assert leases.acquire("app", 1) is None, "the other process holds the only slot"
        holder.kill()
        holder.wait(10)
        wait_until(lambda: leases.acquire("app", 1) == 0, "the killed process's lock is released")
        leases.close()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
