"""The listener on a Unix socket and the client routing an origin to one (backends' `unix_socket:`)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from http_support import run

from aifabric.core import FailureClass
from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient, split_url
from aifabric.http.server import HttpServer, Request, Response
from aifabric.testing.net import free_port


def named(name: str) -> Callable[[Request], Awaitable[Response]]:
    """A handler that says who answered, and the path and Host it was sent."""

    async def handler(request: Request) -> Response:
        return Response(200, f"{name} {request.path} {request.headers.get('host', '')}".encode())

    return handler


def test_the_client_reaches_the_server_only_through_its_socket(tmp_path: Path) -> None:
    async def check() -> None:
        path = str(tmp_path / "a.sock")
        server = await HttpServer(named("a")).start("127.0.0.1", 0)
        await server.listen_unix(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # this user's only
        # An origin nobody listens on over TCP: only the socket can answer for it.
        url = f"http://127.0.0.1:{free_port()}/v1/models"
        client = UpstreamClient()
        client.route_unix({split_url(url)[0]: path})
        try:
            for _ in range(3):
                resp = await client.request("GET", url, timeout=5)
                # The url still gives the path and the Host header.
                host = url.split("/")[2]
                assert (resp.status, await resp.read()) == (200, f"a /v1/models {host}".encode())
            assert len(server.connections) == 1  # kept alive and reused, as over TCP
        finally:
            await client.aclose()
            await server.close(grace=0.5)
        assert not os.path.exists(path)  # the server removes its socket file when it closes

    run(check())


def test_a_missing_socket_fails_the_connect_and_names_the_socket(tmp_path: Path) -> None:
    async def check() -> None:
        path = str(tmp_path / "nobody.sock")
        client = UpstreamClient()
        client.route_unix({("http", "127.0.0.1", 9): path})
        try:
            with pytest.raises(UpstreamFailure) as failed:
                await client.request("GET", "http://127.0.0.1:9/health", timeout=5)
        finally:
            await client.aclose()
        assert failed.value.failure is FailureClass.CONNECT
        assert f"cannot connect to unix socket {path}: No such file or directory" in str(failed.value)

    run(check())


def test_a_changed_route_takes_the_next_request_to_the_new_socket(tmp_path: Path) -> None:
    async def check() -> None:
        servers: dict[str, HttpServer] = {}
        for name in ("a", "b"):
            servers[name] = await HttpServer(named(name)).start("127.0.0.1", 0)
            await servers[name].listen_unix(str(tmp_path / f"{name}.sock"))
        url = f"http://127.0.0.1:{free_port()}/x"
        origin = split_url(url)[0]
        client = UpstreamClient()
        try:
            client.route_unix({origin: str(tmp_path / "a.sock")})
            assert (await (await client.request("GET", url, timeout=5)).read()).startswith(b"a ")
            # A reload points the backend elsewhere: the idle connection to the old socket is closed.
            client.route_unix({origin: str(tmp_path / "b.sock")})
            assert (await (await client.request("GET", url, timeout=5)).read()).startswith(b"b ")
            for _ in range(200):
                if not servers["a"].connections:
                    break
                await asyncio.sleep(0.01)
            assert not servers["a"].connections
            # And without a route the origin is TCP again: nobody listens there.
            client.route_unix({})
            with pytest.raises(UpstreamFailure, match=r"cannot connect to 127\.0\.0\.1:"):
                await client.request("GET", url, timeout=5)
        finally:
            await client.aclose()
            for server in servers.values():
                await server.close(grace=0.5)

    run(check())


def test_a_socket_is_not_made_where_another_user_could_swap_it(tmp_path: Path) -> None:
    async def check() -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # anyone may write, and no sticky bit: anyone could replace the socket
        server = await HttpServer(named("a")).start("127.0.0.1", 0)
        try:
            with pytest.raises(PermissionError, match="writable by other users"):
                await server.listen_unix(str(shared / "a.sock"))
            assert not (shared / "a.sock").exists()
            shared.chmod(0o1777)  # as /tmp: the sticky bit keeps others from replacing our file
            await server.listen_unix(str(shared / "a.sock"))
            assert (shared / "a.sock").is_socket()
        finally:
            await server.close(grace=0.5)

    run(check())
