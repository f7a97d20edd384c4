"""A host of its own for tests: a network namespace with a fake vLLM in it, reached over a veth pair on
a private link-local /30 that exists only between the two ends created here, and a switch that makes
the far end go dark (a partition, or a machine switched off). Everything created is removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

# 169.254.213.0/30: link-local, never routed; both addresses live only on the veth pair below.
ROOT_ADDR, NS_ADDR, PREFIX = "169.254.213.1", "169.254.213.2", 30
PORT = 8000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Partitionable:
    """A namespace with a fake vLLM in it, and a switch to cut its link."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = f"aifab-part-{tag}"
        self.veth = f"aifr{tag}"  # root side (IFNAMSIZ allows 15 characters)
        self.peer = f"aifn{tag}"
        self.proc: subprocess.Popen[str] | None = None

    def setup(self) -> None:
        ip("netns", "add", self.ns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
        ip("link", "set", self.peer, "netns", self.ns)
        ip("addr", "add", f"{ROOT_ADDR}/{PREFIX}", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("netns", "exec", self.ns, "ip", "addr", "add", f"{NS_ADDR}/{PREFIX}", "dev", self.peer)
        ip("netns", "exec", self.ns, "ip", "link", "set", self.peer, "up")
        ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "aifabric.testing.fake_backend"]
        cmd += [
            "--host",
            NS_ADDR,
            "--port",
            str(PORT),
            "--kind",
            "vllm",
            "--model",
            "Qwen2.5-7B-Instruct-AWQ",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), f"the fake backend in {self.ns} did not start: {line!r}"

    @property
    def url(self) -> str:
        return f"http://{NS_ADDR}:{PORT}/v1"

    def partition(self) -> None:
        # The far end of the link goes dark, as a host behind a dead VPN: the gateway's side keeps its
        # address and route, its packets go nowhere. (`tc netem loss 100%` does the same where the
        # kernel has netem; this one needs nothing beyond iproute2.)
        ip("netns", "exec", self.ns, "ip", "link", "set", self.peer, "down")

    def heal(self) -> None:
        ip("netns", "exec", self.ns, "ip", "link", "set", self.peer, "up")

    def teardown(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        # Deleting one end of a veth pair deletes both; the namespace goes with its processes gone.
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True, timeout=10)


def namespaced_host() -> Iterator[Partitionable]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (make test runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (the ip command was not found): apt-get install iproute2")
    host = Partitionable()
    try:
        host.setup()
        yield host
    finally:
        host.teardown()
    # Nothing is left behind.
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert host.ns not in names
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert host.veth not in links
