"""Port conflicts are found before starting, and the holder is named by pid and command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from local_support import wait_until

from aifabric.local.ports import describe_port_holder, find_port_holder, port_in_use, port_in_use_message
from aifabric.testing.net import free_port


def test_a_free_port_is_free_and_a_listening_one_is_not() -> None:
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use("127.0.0.1", port)
        assert find_port_holder(port) is not None
    assert not port_in_use("127.0.0.1", port)
    assert find_port_holder(port) is None


def test_the_holder_is_another_process_named_by_pid_and_command_line() -> None:
    port = free_port()
    code = (
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
        "s.listen(); print('up', flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "up\n"
            holder = find_port_holder(port)
            assert holder is not None
            assert holder.pid == proc.pid
            assert holder.cmdline.startswith(sys.executable + " -c import socket")
            assert holder.cmdline.endswith(str(port))
            message = port_in_use_message("127.0.0.1", port)
            assert message.startswith(f"port {port} on 127.0.0.1 is already in use by pid {proc.pid} (")
        finally:
            proc.kill()
    wait_until(lambda: not port_in_use("127.0.0.1", port), what="the port to be freed")


def test_an_ipv6_listener_is_found_too() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", port))
        sock.listen()
        assert (describe_port_holder(port) or "").startswith(f"pid {os.getpid()} (")
