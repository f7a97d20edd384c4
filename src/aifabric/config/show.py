"""The effective configuration as plain data: every default filled in, every secret redacted.

The result has the shape of a fabric file (names as keys, durations in seconds), so what `aifabric
config show` prints can be read back by the loader, secrets aside.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from aifabric.config.money import Budget
from aifabric.config.schema import FabricConfig, Secret

__all__ = ["REDACTED", "config_secrets", "config_to_dict", "redact_url", "redact_values"]

REDACTED = "********"

# Fields that are keys of their section in the file, or facts about the load rather than settings.
_IMPLIED = {"name", "source", "loaded"}
# Fields holding URLs that may carry a password (redis://:pw@host, https://user:pw@host/v1).
_URL_FIELDS = {"url", "state", "target", "endpoint", "keys", "usage"}


_MIN_QUERY_SECRET = 8  # shorter query values (`?v=1`) are not taken for secrets


def config_to_dict(cfg: FabricConfig, *, redact: bool = True) -> dict[str, Any]:
    """`cfg` as nested dicts/lists/scalars. With `redact` (the default) every `Secret` is `"********"`,
    URL passwords are masked, and every secret value of the file is masked wherever else it appears
    (a key in a URL's query, `?key=${X}`); never a prefix or a length of the value."""
    out = _value(cfg, redact)
    assert isinstance(out, dict)
    return redact_values(out, config_secrets(cfg)) if redact else out


def config_secrets(cfg: FabricConfig) -> frozenset[str]:
    """Every secret value a fabric file holds, for redaction by value: the gateway's API and admin
    keys, backends' api keys, and the passwords and query values of the URLs it names (backends,
    state, alert sinks)."""
    found: set[str] = set()
    for key in (*cfg.gateway.api_keys, *cfg.gateway.admin_keys):
        found.add(key.reveal())
    urls = [cfg.state, *(sink.target for sink in cfg.monitoring.sinks)]
    for backend in cfg.backends.values():
        if backend.api_key:
            found.add(backend.api_key.reveal())
        urls.append(backend.url)
    for url in urls:
        found.update(_url_secrets(url))
    return frozenset(s for s in found if len(s) >= 4)


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [unquote(password), password] if password else []
    for _, value in parse_qsl(parts.query, keep_blank_values=False):
        if len(value) >= _MIN_QUERY_SECRET:
            found.append(value)
    return found


def redact_values(value: Any, secrets: frozenset[str]) -> Any:
    """`value` (dicts, lists, strings) with every string that holds one of `secrets` masked there."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: redact_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v, secrets) for v in value]
    return value


def _value(value: object, redact: bool, field: str = "") -> Any:
    if isinstance(value, Secret):
        return REDACTED if redact else value.reveal()
    if isinstance(value, Budget):
        return str(value)  # as written in the file: 50/month
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _value(getattr(value, f.name), redact, f.name)
            for f in dataclasses.fields(value)
            if f.name not in _IMPLIED
        }
    if isinstance(value, dict):
        return {str(k): _value(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v, redact) for v in value]
    if redact and isinstance(value, str) and field in _URL_FIELDS:
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo masked (`redis://:********@host:6379/0`)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (a sink's command, say)
        return url
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))
