"""Key records, the key ring and the key-store procedures, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifabric.config.money import parse_budget
from aifabric.config.schema import Secret
from aifabric.errors import CommandError, Unauthorized
from aifabric.tenancy.keyring import KeyRing
from aifabric.tenancy.keys import hash_key, new_key, parse_expiry, validate_name
from aifabric.tenancy.keystore import SqliteKeyStore
from aifabric.tenancy.manage import KeySpec, create_key, revoke_key, rotate_key
from aifabric.tenancy.principal import ANONYMOUS, Budget, BudgetPeriod, Priority

NOW = 1_800_000_000.0


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def store(tmp_path: Path) -> SqliteKeyStore:
    s = SqliteKeyStore(tmp_path / "keys.db")
    yield s  # type: ignore[misc]
    s.close()


def test_a_new_key_is_long_random_and_stored_only_as_its_hash(store: SqliteKeyStore) -> None:
    key, record = create_key(store, KeySpec("app"), NOW)
    assert key.startswith("afk-") and len(key) >= 40
    assert key != new_key()
    assert record.key_hash == hash_key(key)
    raw = (store.path).read_bytes() + Path(str(store.path) + "-wal").read_bytes()
    assert key.encode() not in raw
    assert record.prefix == key[:8]


def test_budget_and_expiry_parse_or_say_what_to_write() -> None:
    assert parse_budget("20/day") == Budget(20.0, BudgetPeriod.DAY)
    assert parse_budget("$500/month") == Budget(500.0, BudgetPeriod.MONTH)
    for bad in ("20", "20/week", "x/day", "-1/day", "nan/day"):
        with pytest.raises(ValueError, match="AMOUNT/PERIOD"):
            parse_budget(bad)
    assert parse_expiry("30d", NOW) == NOW + 30 * 86400
    assert parse_expiry("2030-01-01", NOW) == 1893456000.0
    with pytest.raises(ValueError, match="in the past"):
        parse_expiry("2020-01-01", NOW)
    with pytest.raises(ValueError, match="neither a date"):
        parse_expiry("soon", NOW)
    with pytest.raises(ValueError, match="reserved"):
        validate_name("master")
    with pytest.raises(ValueError, match="not valid"):
        validate_name("has space")


def test_the_ring_gives_each_key_its_principal_and_refuses_the_rest(store: SqliteKeyStore) -> None:
    key, _ = create_key(
        store,
        KeySpec("app", roles=("chat-fast",), rpm=5, budget=Budget(3, BudgetPeriod.DAY)),
        NOW,
    )
    ring = KeyRing([Secret("master-key")], store.load())
    principal = ring.authenticate(bearer(key), NOW)
    assert principal.name == "app"
    assert principal.roles == frozenset({"chat-fast"})
    assert principal.rpm == 5 and principal.budget == Budget(3, BudgetPeriod.DAY)
    assert principal.allows("chat-fast") and not principal.allows("chat-deep")
    assert principal.priority is Priority.INTERACTIVE and not principal.admin
    # Anthropic's and Azure's headers carry keys too.
    assert ring.authenticate({"x-api-key": key}, NOW).name == "app"
    assert ring.authenticate({"api-key": "master-key"}, NOW).master
    with pytest.raises(Unauthorized) as missing:
        ring.authenticate({}, NOW)
    assert missing.value.code == "missing_api_key"
    with pytest.raises(Unauthorized) as wrong:
        ring.authenticate(bearer(key + "x"), NOW)
    assert key not in wrong.value.message


def test_an_empty_store_and_no_master_key_leave_the_gateway_open() -> None:
    assert KeyRing([], []).authenticate({}, NOW) is ANONYMOUS
    assert KeyRing([], [], required=True).enabled


def test_revoking_every_key_does_not_open_the_gateway(store: SqliteKeyStore) -> None:
    key, _ = create_key(store, KeySpec("app"), NOW)
    revoke_key(store, "app", NOW + 1)
    ring = KeyRing([], store.load())
    assert ring.enabled
    with pytest.raises(Unauthorized):
        ring.authenticate(bearer(key), NOW + 2)
    with pytest.raises(Unauthorized):
        ring.authenticate({}, NOW + 2)


def test_expired_and_rotated_keys(store: SqliteKeyStore) -> None:
    old, _ = create_key(store, KeySpec("app", expires=NOW + 100, priority=Priority.BATCH), NOW)
    new, record = rotate_key(store, "app", NOW + 10, grace=30)
    assert record.priority == "batch" and record.expires == NOW + 100  # settings carried over
    ring = KeyRing([], store.load())
    assert ring.authenticate(bearer(old), NOW + 20).name == "app"  # within the grace period
    assert ring.authenticate(bearer(new), NOW + 20).priority is Priority.BATCH
    with pytest.raises(Unauthorized) as after_grace:
        ring.authenticate(bearer(old), NOW + 41)
    assert after_grace.value.code == "expired_api_key"
    assert ring.authenticate(bearer(new), NOW + 41).name == "app"
    with pytest.raises(Unauthorized, match="expired"):
        ring.authenticate(bearer(new), NOW + 100)


def test_procedures_refuse_what_cannot_be_done(store: SqliteKeyStore) -> None:
    create_key(store, KeySpec("app"), NOW)
    with pytest.raises(CommandError, match="exists already"):
        create_key(store, KeySpec("app"), NOW)
    with pytest.raises(CommandError, match="no key named 'other'"):
        revoke_key(store, "other", NOW)
    revoke_key(store, "app", NOW)
    with pytest.raises(CommandError, match="revoked"):
        rotate_key(store, "app", NOW)


def test_every_write_moves_the_version(store: SqliteKeyStore, tmp_path: Path) -> None:
    reader = SqliteKeyStore(tmp_path / "keys.db", create=False)  # another process's view
    before = reader.version()
    create_key(store, KeySpec("app"), NOW)
    after_create = reader.version()
    revoke_key(store, "app", NOW)
    assert len({before, after_create, reader.version()}) == 3
    reader.close()


def test_a_gateway_does_not_create_a_missing_store(tmp_path: Path) -> None:
    path = tmp_path / "none" / "keys.db"
    reader = SqliteKeyStore(path, create=False)
    assert reader.load() == [] and reader.version() == "absent"
    assert not path.exists()
