"""The effective configuration: defaults filled in, secrets never shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import yaml
from config_support import BASE, SEED, SEED_ENV, Write

from aifabric.config.load import load_config, load_config_text
from aifabric.config.show import config_to_dict, redact_url


def test_defaults_are_filled_in() -> None:
    shown = config_to_dict(load_config(SEED, environ=SEED_ENV))
    assert list(shown) == [
        "gateway", "hosts", "backends", "roles", "aliases", "monitoring", "retry", "state", "tracing", "keys",
        "usage",
    ]  # fmt: skip
    assert shown["tracing"] is None and shown["keys"] is None  # off unless configured / the default store
    assert shown["gateway"]["max_body_bytes"] == 32 * 1024 * 1024
    assert shown["backends"]["armitage-vllm"]["health"]["interval"] == 10.0
    assert shown["roles"]["chat-fast"] == {
        "kind": "chat",
        "targets": [
            {
                "backend": "armitage-vllm",
                "model": "Qwen2.5-7B-Instruct-AWQ",
                "weight": 1.0,
                "price": {"input": 0.0, "output": 0.0},
            }
        ],
        "fallbacks": ["openai/strong"],
        "description": "",
        "balance": "least_load",  # the default for a role on a backend that reports its load (vLLM)
        "overflow": None,
        "limits": {"rpm": None, "tpm": None},
        "affinity": True,
    }
    assert shown["monitoring"]["interval"] == 300.0
    assert shown["hosts"]["wintermute"] == {
        "address": "wintermute.pangolin-vega.ts.net",
        "always_on": False,
        "wake": None,
    }


def test_secrets_are_redacted_entirely() -> None:
    shown = config_to_dict(load_config(SEED, environ=SEED_ENV))
    assert shown["gateway"]["api_keys"] == ["********"]
    assert shown["backends"]["openai"]["api_key"] == "********"
    dumped = orjson.dumps(shown).decode()
    for secret in SEED_ENV.values():
        assert secret not in dumped
        assert secret[:6] not in dumped  # not even a prefix


def test_passwords_in_urls_are_redacted(write: Write) -> None:
    path = write(BASE + "state: redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0\n")
    shown = config_to_dict(load_config(path, environ={"REDIS_PASSWORD": "redis-pw-5521"}))
    assert shown["state"] == "redis://:********@127.0.0.1:6379/0"
    assert redact_url("https://user:pw@host/v1") == "https://user:********@host/v1"
    assert redact_url("http://host:8000/v1") == "http://host:8000/v1"


def test_unredacted_output_reads_back_as_the_same_config(tmp_path: Path) -> None:
    original = load_config(SEED, environ=SEED_ENV)
    text = yaml.safe_dump(config_to_dict(original, redact=False), sort_keys=False)
    again = load_config_text(text, "shown.yaml", environ={}, base_dir=tmp_path)
    assert dataclasses.replace(again, source=original.source) == original


def test_a_password_in_the_tracing_endpoint_is_redacted() -> None:
    from aifabric.config.load import load_config_text
    from aifabric.config.show import config_to_dict

    config = load_config_text(
        'backends: {a: {kind: vllm, url: "http://h:8000/v1"}}\n'
        "roles: {chat: {kind: chat, targets: [{backend: a, model: m}]}}\n"
        'tracing: {endpoint: "https://user:otel-pass-77@collector:4318"}\n',
        environ={},
    )
    shown = config_to_dict(config)["tracing"]
    assert shown == {
        "endpoint": "https://user:********@collector:4318",
        "service_name": "aifabric",
        "sample_ratio": 1.0,
    }
