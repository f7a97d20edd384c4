"""`aifabric config reload` on a running gateway: every worker of `serve --workers N` and every replica
sharing Redis reload their own fabric file; a broken file is refused with file, line and fix; the route
is an admin route; `gateway.watch` reloads on a change of the file itself."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
from state_support import Serve, fabric, models_on_each_connection, serve_workers

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config
from aifabric.gateway.app import Gateway
from aifabric.gateway.reload import reload_from_file
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port
from aifabric.testing.wait import eventually, wait_until
from redis_support import RedisServer


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue(), err.getvalue()


def with_alias(text: str, alias: str = "local/chat") -> str:
    return text + f"aliases: {{{alias}: r}}\n"


def test_every_worker_reloads_and_the_diff_is_printed(tmp_path: Path) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(fabric(backend.url))
        serve = serve_workers(fabric_file, tmp_path / "run")
        try:
            serve.wait_ready()
            workers = set(serve.workers())
            fabric_file.write_text(with_alias(fabric(backend.url)))
            code, out, err = run_cli("config", "reload", "--url", serve.url)
            assert code == 0, err
            assert "+ aliases.local/chat: -> r" in out
            assert "announced through local" in out
            # The command waited for both workers: each one's own answer, named by its pid.
            assert out.count("  ok   ") == 2, out
            assert all(f"/{pid}/" in out for pid in workers), (workers, out)
            # The worker that answered reloaded at once; the other in its next sync round.
            wait_until(
                lambda: (
                    (seen := models_on_each_connection(serve.port)).keys() == workers
                    and all(ids == {"r", "local/chat"} for ids in seen.values())
                ),
                "both workers serve the reloaded aliases",
            )

            fabric_file.write_text(fabric(backend.url).replace("backend: b", "backend: gone"))
            code, out, err = run_cli("config", "reload", "--url", serve.url)
            assert code == 1
            assert f"{fabric_file}:" in err and "'gone'" in err and "fix:" in err
            assert "Traceback" not in out + err
            seen = models_on_each_connection(serve.port)
            assert all(ids == {"r", "local/chat"} for ids in seen.values()), "the old table stays"

            code, out, _ = run_cli("config", "reload", "--url", serve.url, "--json")
            body = orjson.loads(out)
            assert code == 1 and body["status"] == 422 and body["error"]["code"] == "config_refused"
            assert body["reload"]["problems"][0]["file"] == str(fabric_file)
        finally:
            serve.stop()


def test_replicas_sharing_redis_follow_a_reload(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aifabric.gateway")
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        state = redis_server.url + "?interval=50ms"
        files = [tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"]
        for path in files:
            path.write_text(fabric(backend.url, state=state))

        async def scenario() -> None:
            gateways = [Gateway(load_config(path)) for path in files]
            try:
                for gw, path in zip(gateways, files, strict=True):
                    await gw.start("127.0.0.1", 0)
                    gw.reloader = lambda gw=gw, path=path: reload_from_file(gw, str(path))
                # Every replica has seen the store once (the announcement then current is old news).
                primed = lambda: all(g.state_sync and g.state_sync.config_primed for g in gateways)  # noqa: E731
                await eventually(primed, "every replica has read the store once")
                files[0].write_text(with_alias(fabric(backend.url, state=state)))
                files[1].write_text(with_alias(fabric(backend.url, state=state)))  # c's file is not updated
                port = gateways[0].server.port  # type: ignore[union-attr]
                async with httpx.AsyncClient() as client:
                    response = await client.post(f"http://127.0.0.1:{port}/admin/config/reload", timeout=10)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["applied"] and body["shared_through"].startswith("redis")
                assert [c["name"] for c in body["diff"]["changes"]] == ["local/chat"]
                await eventually(lambda: "local/chat" in gateways[1].table.names, "replica b reloaded")
                await eventually(
                    lambda: "differs from the one" in caplog.text, "replica c said its file is not the same"
                )
                assert "local/chat" not in gateways[2].table.names
            finally:
                for gw in gateways:
                    await gw.close()

        asyncio.run(scenario())


def test_the_route_needs_a_key_when_keys_are_set(tmp_path: Path) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        text = fabric(backend.url).replace(
            "workers: 1}", 'workers: 1, api_keys: ["app-key-1"], admin_keys: ["admin-key-1"]}'
        )
        fabric_file.write_text(text)
        serve = Serve(fabric_file)
        try:
            serve.wait_ready()
            code, _, err = run_cli("config", "reload", "--url", serve.url, "--api-key", "wrong")
            assert code == 1 and "401" in err
            # An application's key is not an operator's: it cannot reload the gateway.
            code, _, err = run_cli("config", "reload", "--url", serve.url, "--api-key", "app-key-1")
            assert code == 1 and "403" in err
            code, out, err = run_cli("config", "reload", "--url", serve.url, "--api-key", "admin-key-1")
            assert code == 0 and "no changes" in out, err
            assert "shares no state" in out
            assert httpx.get(serve.url + "/admin/config/reload").status_code == 401  # the key comes first
            response = httpx.get(
                serve.url + "/admin/config/reload", headers={"authorization": "Bearer admin-key-1"}
            )
            assert response.status_code == 405 and response.json()["error"]["message"]
        finally:
            serve.stop()


def test_the_embedded_default_has_nothing_to_reload_and_down_is_exit_3(tmp_path: Path) -> None:
    async def scenario() -> None:
        from aifabric.config.defaults import load_config_or_default

        gw = Gateway(load_config_or_default(None), probe=False)
        await gw.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as client:
                port = gw.server.port  # type: ignore[union-attr]
                r = await client.post(f"http://127.0.0.1:{port}/admin/config/reload")
            assert r.status_code == 409 and r.json()["error"]["code"] == "no_fabric_file"
        finally:
            await gw.close()

    asyncio.run(scenario())
    code, _, err = run_cli("config", "reload", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 3 and "unreachable" in err


def test_watch_reloads_when_the_file_changes(tmp_path: Path) -> None:
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        base = fabric(backend.url).replace("workers: 1}", "workers: 1, watch: true}")
        fabric_file.write_text(base)
        serve = Serve(fabric_file)
        try:
            serve.wait_ready()

            def models() -> set[str]:
                return {m["id"] for m in httpx.get(serve.url + "/v1/models").json()["data"]}

            assert models() == {"r"}
            fabric_file.write_text(with_alias(base))
            wait_until(lambda: models() == {"r", "local/chat"}, "the watcher reloaded the changed file")
            fabric_file.write_text("roles: [broken")
            wait_until(lambda: any("refused" in line for line in serve.output), "a broken file is refused")
            assert models() == {"r", "local/chat"}
        finally:
            serve.stop()


def test_a_reload_keeps_the_command_lines_overrides(tmp_path: Path) -> None:
    """`serve --workers 2 --access-log` on a file that says neither: a reload of the unchanged file
    (asked over HTTP, or SIGHUP) changes nothing, and access logging goes on."""
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        fabric_file = tmp_path / "fabric.yaml"
        fabric_file.write_text(fabric(backend.url))  # workers: 1, no access_log
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        serve = Serve(fabric_file, "--workers", "2", "--access-log", env={"XDG_RUNTIME_DIR": str(runtime)})
        try:
            serve.wait_ready()
            code, out, err = run_cli("config", "reload", "--url", serve.url)
            assert code == 0, err
            assert "no changes" in out and "workers" not in out and "access_log" not in out, out
            serve.signal(signal.SIGHUP)  # both workers re-read the file
            wait_until(
                lambda: sum("reloaded" in line and "no changes" in line for line in serve.output) >= 3,
                "each worker reported its SIGHUP reload",
            )
            assert not any("workers: 2 -> 1" in line or "access_log" in line for line in serve.output)
            # Still two workers sharing state: both answer, and each logs its requests.
            seen = models_on_each_connection(serve.port)
            assert len(seen) == 2, seen
            chat = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(8):  # a connection each: the kernel spreads them over both workers
                assert httpx.post(serve.url + "/v1/chat/completions", json=chat).status_code == 200
            wait_until(
                lambda: sum("POST /v1/chat/completions 200" in line for line in serve.output) == 8,
                "every request after the reloads was logged",
            )
        finally:
            serve.stop()


def test_reload_reports_every_replica_and_fails_when_one_refuses(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two replicas share Redis; b's file is broken (a stale or bad ConfigMap): `config reload` asked of
    a says a applied and b refused (with b's problem), and exits 1. A replica that is alive but never
    answers (its record in the store, no reload) is named as not answering in time."""
    with FakeBackend(kind="vllm", models=("m",)) as backend:
        state = redis_server.url + "?interval=50ms"
        a_file, b_file = tmp_path / "a.yaml", tmp_path / "b.yaml"
        for path in (a_file, b_file):
            path.write_text(fabric(backend.url, state=state))

        async def scenario() -> None:
            gateways = [Gateway(load_config(path)) for path in (a_file, b_file)]
            try:
                for gw, path in zip(gateways, (a_file, b_file), strict=True):
                    await gw.start("127.0.0.1", 0)
                    gw.reloader = lambda gw=gw, path=path: reload_from_file(gw, str(path))
                primed = lambda: all(g.state_sync and g.state_sync.config_primed for g in gateways)  # noqa: E731
                await eventually(primed, "every replica has read the store once")
                a, b = (g.state_sync for g in gateways)
                assert a is not None and b is not None
                url = f"http://127.0.0.1:{gateways[0].server.port}"  # type: ignore[union-attr]

                a_file.write_text(with_alias(fabric(backend.url, state=state)))
                b_file.write_text(with_alias(fabric(backend.url, state=state)))
                code, out, err = await asyncio.to_thread(run_cli, "config", "reload", "--url", url)
                assert code == 0, out + err
                assert f"  ok   {a.holder}: applied" in out and f"  ok   {b.holder}: applied" in out

                b_file.write_text(fabric(backend.url, state=state).replace("backend: b", "backend: gone"))
                a_file.write_text(fabric(backend.url, state=state))
                code, out, err = await asyncio.to_thread(run_cli, "config", "reload", "--url", url)
                assert code == 1, out + err
                assert f"  ok   {a.holder}: applied" in err
                assert f"  FAIL {b.holder}: refused, still runs version" in err
                assert f"{b_file}:" in err and "'gone'" in err, err
                assert "1 of 2 gateways did not apply this reload" in err
                assert "local/chat" in gateways[1].table.names, "b keeps its running table"

                # A replica alive in the store that never takes the reload up: named, after --timeout.
                async def ghost() -> None:  # renews its record every round, as a live replica does
                    while True:
                        await a.store.publish_member("ghost/1/000000", '{"announcement": null}', time.time())
                        await asyncio.sleep(0.05)

                renewing = asyncio.create_task(ghost())
                b_file.write_text(fabric(backend.url, state=state))
                try:
                    code, out, err = await asyncio.to_thread(
                        run_cli, "config", "reload", "--url", url, "--timeout", "1", "--json"
                    )
                finally:
                    renewing.cancel()
                body = orjson.loads(out)
                states = {p["holder"]: p["state"] for p in body["processes"]}
                assert code == 1 and states == {
                    a.holder: "applied",
                    b.holder: "applied",
                    "ghost/1/000000": "no_answer",
                }
            finally:
                for gw in gateways:
                    await gw.close()

        asyncio.run(scenario())
