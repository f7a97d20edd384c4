"""Which values of a fabric file are hunted for by value in every log line, error body and reason."""

from __future__ import annotations

from aifabric.config.load import load_config_text
from aifabric.config.show import config_secrets


def test_short_credential_named_query_values_are_hunted_like_userinfo_passwords() -> None:
    config = load_config_text(
        """
backends:
  a: {kind: vllm, url: "http://u:pw42@127.0.0.1:9/v1?password=hunter2&v=1&application_name=aifabric"}
  b: {kind: vllm, url: "http://127.0.0.1:9/v1?sig=abc&page=12"}
roles:
  chat: {kind: chat, targets: [{backend: a, model: m}, {backend: b, model: m}]}
""",
        "fabric.yaml",
        environ={},
    )
    secrets = config_secrets(config)
    # 4+ characters, as for the userinfo password, when the name says credential.
    assert {"hunter2", "pw42"} <= secrets
    # Not credentials by name, and short: the product's name and a page number stay readable.
    assert not {"1", "aifabric", "abc", "12"} & secrets
