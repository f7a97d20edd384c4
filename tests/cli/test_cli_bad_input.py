"""Commands given bad input say what is wrong and exit non-zero: never a traceback, never a start."""

from __future__ import annotations

import pytest

from cli_process import aifabric


@pytest.mark.parametrize(
    "argv",
    [
        ("serve", "--port", "99999"),
        ("serve", "--port", "-1"),
        ("up", "--port", "70000"),
        ("up", "--local-port-base", "70000"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error(argv: tuple[str, ...]) -> None:
    result = aifabric(*argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "port number from" in result.stderr


def test_local_ports_that_would_run_past_the_last_port_are_refused() -> None:
    result = aifabric("up", "--local-port-base", "65534")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "65535" in result.stderr


def test_zero_workers_is_refused_not_served() -> None:
    result = aifabric("serve", "--workers", "0", "--port", "0")
    assert result.returncode == 1
    assert "--workers must be at least 1" in result.stderr


@pytest.mark.parametrize(("command", "port"), [("serve", "0"), ("up", "8123")])
def test_an_address_not_of_this_machine_is_reported_not_a_traceback(command: str, port: str) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: binding fails at once, nothing is sent.
    result = aifabric(command, "--host", "192.0.2.1", "--port", port)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot listen on 192.0.2.1" in result.stderr


@pytest.mark.parametrize("command", ["smoke", "status", "drill"])
@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:8000", "http://127.0.0.1:notaport"])
def test_a_gateway_url_that_is_not_one_is_a_usage_error(command: str, url: str) -> None:
    result = aifabric(command, "--url", url)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--url" in result.stderr and url in result.stderr
