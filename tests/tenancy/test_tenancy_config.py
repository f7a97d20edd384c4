"""The fabric file's settings for tenancy: `keys:`, `roles.X.limits`, `backends.X.max_concurrency`."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifabric.config.load import load_config, load_config_text
from aifabric.errors import ConfigError
from aifabric.tenancy.keystore import (
    RedisKeyStore,
    SqliteKeyStore,
    default_keys_path,
    keys_url,
    open_key_store,
)

BASE = """
backends:
  b: {kind: vllm, url: "http://127.0.0.1:9/v1", max_concurrency: 4, max_queue: 10}
roles:
  chat-fast: {kind: chat, targets: [{backend: b, model: m}], limits: {rpm: 60, tpm: 1000}}
"""


def test_limits_and_caps_are_read() -> None:
    config = load_config_text(BASE, "fabric.yaml", environ={})
    assert config.backends["b"].max_concurrency == 4 and config.backends["b"].max_queue == 10
    assert config.roles["chat-fast"].limits.rpm == 60 and config.roles["chat-fast"].limits.tpm == 1000


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("keys: mysql://db/keys", "keys: sqlite:///var/lib/aifabric/keys.db"),
        ("keys: sqlite://", "keys must be a sqlite:///PATH"),
    ],
)
def test_a_wrong_key_store_is_refused_with_the_line_and_the_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config_text(BASE + text + "\n", "fabric.yaml", environ={})
    assert "fabric.yaml:6" in str(error.value) and says in str(error.value)


def test_a_wrong_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="rpm"):
        load_config_text(BASE.replace("rpm: 60", "rpm: 0"), "fabric.yaml", environ={})


def test_where_keys_live_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config_text(BASE, "fabric.yaml", environ={})
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert keys_url(config) == f"sqlite://{tmp_path}/data/aifabric/keys.db"  # as docs/tenancy.md says
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_keys_path() == Path.home() / ".local" / "share" / "aifabric" / "keys.db"
    shared = load_config_text(BASE + "state: redis://127.0.0.1:1/0\n", "fabric.yaml", environ={})
    assert keys_url(shared) == "redis://127.0.0.1:1/0"
    assert isinstance(open_key_store(shared, create=False), RedisKeyStore)
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(BASE + "keys: sqlite://keys.db\n")
    store = open_key_store(load_config(fabric, environ={}))
    assert isinstance(store, SqliteKeyStore) and store.path == tmp_path / "keys.db", "relative to the file"
    store.close()
