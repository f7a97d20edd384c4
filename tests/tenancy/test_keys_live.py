"""Keys made, rotated and revoked by the CLI (another process) hold on a running gateway within 5 s,
seen through the official OpenAI SDK."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from tenancy_support import MASTER, fabric_text, keys_cli

from aifabric.config.load import load_config
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

HONOURED_WITHIN = 5.0  # seconds: the promise of docs/tenancy.md
HI = [{"role": "user", "content": "hi"}]


def works(client: openai.OpenAI, model: str = "chat-fast") -> bool:
    try:
        client.chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    except openai.AuthenticationError:
        return False
    return True


def allowed(client: openai.OpenAI, model: str) -> bool:
    """Whether the key may use `model` now (403 while it may not)."""
    try:
        return works(client, model)
    except openai.PermissionDeniedError:
        return False


@pytest.fixture
def live(tmp_path: Path, fb: FakeBackend) -> tuple[RunningGateway, Path]:
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db"))
    gw = RunningGateway(load_config(fabric_file, environ={})).start()
    yield gw, fabric_file  # type: ignore[misc]
    gw.stop()


def test_a_key_made_by_the_cli_works_within_seconds_and_only_for_its_roles(
    live: tuple[RunningGateway, Path],
) -> None:
    gw, fabric_file = live
    assert works(gw.openai(MASTER)), "the master key of the fabric file keeps working"
    created = keys_cli(fabric_file, "create", "--name", "team-a", "--roles", "local/chat")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("afk-") and "\n" not in key, "stdout is the key alone"
    client = gw.openai(key)
    wait_until(lambda: works(client), "the new key is accepted", HONOURED_WITHIN)

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="chat-deep", messages=HI)  # type: ignore[arg-type]
    assert denied.value.status_code == 403
    assert denied.value.code == "model_not_allowed"
    assert "team-a" in denied.value.message and key not in denied.value.message
    with pytest.raises(openai.PermissionDeniedError):  # the Responses API admits the same way
        client.responses.create(model="chat-deep", input="hi")
    assert client.responses.create(model="local/chat", input="hi").output_text
    assert sorted(m.id for m in client.models.list()) == ["chat-fast", "local/chat"]
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as claude:
        assert [m.id for m in claude.models.list()] == ["chat-fast", "local/chat"]  # Anthropic's shape too
        with pytest.raises(anthropic.NotFoundError):
            claude.models.retrieve("chat-deep")
    assert client.models.retrieve("local/chat").id == "local/chat"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("chat-deep")
    assert len(gw.openai(MASTER).models.list().data) == 3, "the master key sees every role"

    revoked = keys_cli(fabric_file, "revoke", "team-a")
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: not works(client), "the revoked key is refused", HONOURED_WITHIN)
    assert works(gw.openai(MASTER))


def test_a_rotated_key_keeps_working_for_its_grace_period_only(live: tuple[RunningGateway, Path]) -> None:
    gw, fabric_file = live
    old = keys_cli(fabric_file, "create", "--name", "batch-job", "--priority", "batch").stdout.strip()
    old_client = gw.openai(old)
    wait_until(lambda: works(old_client), "the key is accepted", HONOURED_WITHIN)

    rotated = keys_cli(fabric_file, "rotate", "batch-job", "--grace", "1h")
    assert rotated.returncode == 0, rotated.stderr
    new_client = gw.openai(rotated.stdout.strip())
    wait_until(lambda: works(new_client), "the rotated key is accepted", HONOURED_WITHIN)
    assert works(old_client), "the old key works during the grace period"

    keys_cli(fabric_file, "rotate", "batch-job", "--grace", "0s")
    wait_until(lambda: not works(new_client), "a key rotated without grace is refused", HONOURED_WITHIN)
    with pytest.raises(openai.AuthenticationError) as expired:
        new_client.models.list()
    assert expired.value.code == "expired_api_key"


def test_the_list_never_shows_a_key(live: tuple[RunningGateway, Path]) -> None:
    _, fabric_file = live
    key = keys_cli(fabric_file, "create", "--name", "app", "--budget", "20/day", "--rpm", "60").stdout.strip()
    listed = keys_cli(fabric_file, "list")
    as_json = keys_cli(fabric_file, "list", "--json")
    for out in (listed.stdout + listed.stderr, as_json.stdout):
        assert "app" in out and "20/day" in out
        assert key not in out and key[:12] not in out


def test_operator_mistakes_are_refused_with_the_fix(live: tuple[RunningGateway, Path]) -> None:
    _, fabric_file = live
    unknown_role = keys_cli(fabric_file, "create", "--name", "x", "--roles", "chat-fats")
    assert unknown_role.returncode == 2
    assert "chat-fats" in unknown_role.stderr and "chat-deep, chat-fast" in unknown_role.stderr
    bad_budget = keys_cli(fabric_file, "create", "--name", "x", "--budget", "lots")
    assert bad_budget.returncode == 2 and "20/day" in bad_budget.stderr
    missing = keys_cli(fabric_file, "revoke", "nobody")
    assert missing.returncode == 1 and "keys list" in missing.stderr
    assert "Traceback" not in unknown_role.stderr + bad_budget.stderr + missing.stderr


def test_a_request_without_a_valid_key_is_refused_on_its_head_before_its_body(
    live: tuple[RunningGateway, Path],
) -> None:
    gw, _ = live
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        # 10 MB announced, not one byte of it sent: the 401 comes anyway, and the connection closes.
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong\r\n"
            b"content-type: application/json\r\ncontent-length: 10000000\r\n\r\n"
        )
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b'"code":"invalid_api_key"' in answer and b"wrong" not in answer.split(b"\r\n\r\n", 1)[1]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        # Without a body, the connection stays usable: two refusals, then a good request on it.
        request = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong\r\n\r\n"
        good = (
            f"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {MASTER}\r\n"
            "connection: close\r\n\r\n"
        )
        sock.sendall(request + request + good.encode())
        answers = _read_all(sock)
    assert answers.count(b"HTTP/1.1 401 ") == 2 and answers.count(b"HTTP/1.1 200 ") == 1


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_on_anthropics_route_the_key_checks_answer_in_anthropics_shape(
    live: tuple[RunningGateway, Path],
) -> None:
    gw, fabric_file = live
    key = keys_cli(fabric_file, "create", "--name", "agent", "--roles", "chat-fast").stdout.strip()
    wait_until(lambda: works(gw.openai(key)), "the key is accepted", HONOURED_WITHIN)
    hi = [{"role": "user", "content": "hi"}]
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as client:
        assert client.messages.create(model="chat-fast", max_tokens=5, messages=hi).content  # type: ignore[arg-type]
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            client.messages.create(model="chat-deep", max_tokens=5, messages=hi)  # type: ignore[arg-type]
        assert denied.value.status_code == 403
        assert denied.value.body["type"] == "error"  # type: ignore[index]
        assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
        assert "agent" in denied.value.message
    with anthropic.Anthropic(base_url=gw.url, api_key=key + "x", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            wrong.messages.create(model="chat-fast", max_tokens=5, messages=hi)  # type: ignore[arg-type]
        assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_a_reload_that_names_another_key_store_reads_it(
    live: tuple[RunningGateway, Path], tmp_path: Path
) -> None:
    gw, fabric_file = live
    old_key = keys_cli(fabric_file, "create", "--name", "old").stdout.strip()
    wait_until(lambda: works(gw.openai(old_key)), "a key of the first store is accepted", HONOURED_WITHIN)
    other = tmp_path / "other.yaml"
    other.write_text(fabric_file.read_text().replace("keys.db", "other-keys.db"))
    new_key = keys_cli(other, "create", "--name", "new").stdout.strip()
    gw.call(lambda: gw.gateway.reload(load_config(other, environ={})))  # type: ignore[union-attr]
    wait_until(lambda: works(gw.openai(new_key)), "a key of the new store is accepted", HONOURED_WITHIN)
    assert not works(gw.openai(old_key)), "the old store's keys are gone with it"


def test_the_first_key_says_that_it_closes_the_gateway_to_clients_without_one(
    tmp_path: Path, fb: FakeBackend
) -> None:
    fabric_file = tmp_path / "fabric.yaml"  # no master key: the gateway is open until a key exists
    fabric_file.write_text(
        fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db").replace(f'api_keys: ["{MASTER}"]', "")
    )
    gw = RunningGateway(load_config(fabric_file, environ={})).start()
    try:
        assert httpx.get(gw.url + "/v1/models").status_code == 200
        first = keys_cli(fabric_file, "create", "--name", "first")
        assert first.returncode == 0, first.stderr
        assert "first key" in first.stderr and "401" in first.stderr
        wait_until(lambda: httpx.get(gw.url + "/v1/models").status_code == 401, "keyless clients refused")
        second = keys_cli(fabric_file, "create", "--name", "second")
        assert "first key" not in second.stderr  # said once, when it happens
    finally:
        gw.stop()


def test_a_key_updated_by_the_cli_keeps_its_secret_and_gets_its_new_settings_within_seconds(
    live: tuple[RunningGateway, Path],
) -> None:
    gw, fabric_file = live
    key = keys_cli(
        fabric_file, "create", "--name", "app", "--roles", "chat-fast", "--rpm", "1"
    ).stdout.strip()
    client = gw.openai(key)
    wait_until(lambda: works(client), "the key is accepted", HONOURED_WITHIN)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]

    # The limit lifted, another role allowed, a budget and a concurrency limit set: the same key.
    updated = keys_cli(
        fabric_file,
        "update",
        "app",
        "--rpm",
        "none",
        "--roles",
        "chat-deep",
        "--budget",
        "5/day",
        "--concurrency",
        "3",
    )
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout == "" and key not in updated.stderr, "no key is printed: it has not changed"
    wait_until(lambda: allowed(client, "chat-deep"), "the key may use its new role", HONOURED_WITHIN)
    assert [works(client, "chat-deep") for _ in range(3)] == [True] * 3, "no requests-per-minute limit now"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
    [view] = [v for v in json.loads(keys_cli(fabric_file, "list", "--json").stdout) if v["name"] == "app"]
    assert (view["rpm"], view["roles"], view["budget"], view["concurrency"]) == (
        None,
        ["chat-deep"],
        "5/day",
        3,
    )
    listed = keys_cli(fabric_file, "list").stdout
    assert "CONCURRENCY" in listed.splitlines()[0] and " 3 " in listed.splitlines()[1]

    # Every role again, and a tokens-per-minute limit that the next requests meet.
    keys_cli(fabric_file, "update", "app", "--roles", "*", "--tpm", "1")
    wait_until(lambda: allowed(client, "chat-fast"), "the key may use every role again", HONOURED_WITHIN)
    with pytest.raises(openai.RateLimitError, match="tokens per minute"):
        for _ in range(3):
            client.chat.completions.create(model="chat-fast", messages=HI, max_tokens=5)  # type: ignore[arg-type]


def test_updating_what_cannot_be_updated_says_how(live: tuple[RunningGateway, Path]) -> None:
    _, fabric_file = live
    missing = keys_cli(fabric_file, "update", "nobody", "--rpm", "5")
    assert missing.returncode == 1 and "keys list" in missing.stderr
    keys_cli(fabric_file, "create", "--name", "app")
    nothing = keys_cli(fabric_file, "update", "app")
    assert nothing.returncode == 2 and "--rpm 600" in nothing.stderr
    zero = keys_cli(fabric_file, "update", "app", "--rpm", "0")
    assert zero.returncode == 2 and "not a positive number" in zero.stderr
    bad_role = keys_cli(fabric_file, "update", "app", "--roles", "chat-fats")
    assert bad_role.returncode == 2 and "chat-deep, chat-fast" in bad_role.stderr
    keys_cli(fabric_file, "revoke", "app")
    revoked = keys_cli(fabric_file, "update", "app", "--rpm", "5")
    assert revoked.returncode == 1 and "revoked" in revoked.stderr
    assert "Traceback" not in missing.stderr + nothing.stderr + zero.stderr + bad_role.stderr + revoked.stderr


def test_the_list_shows_until_when_a_rotated_key_s_predecessor_works(
    live: tuple[RunningGateway, Path],
) -> None:
    _, fabric_file = live
    keys_cli(fabric_file, "create", "--name", "app")
    keys_cli(fabric_file, "rotate", "app", "--grace", "2h")
    header, row = keys_cli(fabric_file, "list").stdout.splitlines()
    until = json.loads(keys_cli(fabric_file, "list", "--json").stdout)[0]["previous_valid_until"]
    assert "OLD KEY UNTIL" in header and until is not None and row.rstrip().endswith(until)
