"""The effective configuration as plain data: every default filled in, every secret redacted.

The result has the shape of a fabric file (names as keys, durations in seconds), so what `aifabric
config show` prints can be read back by the loader, secrets aside.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aifabric.config.money import Budget
from aifabric.config.schema import FabricConfig, Secret

__all__ = ["REDACTED", "config_to_dict", "redact_url"]

REDACTED = "********"

# Fields that are keys of their section in the file, or facts about the load rather than settings.
_IMPLIED = {"name", "source", "loaded"}
# Fields holding URLs that may carry a password (redis://:pw@host, https://user:pw@host/v1).
_URL_FIELDS = {"url", "state", "target", "endpoint", "keys", "usage"}


def config_to_dict(cfg: FabricConfig, *, redact: bool = True) -> dict[str, Any]:
    """`cfg` as nested dicts/lists/scalars. With `redact` (the default) every `Secret` is `"********"`
    and URL passwords are masked; never a prefix or a length of the value."""
    out = _value(cfg, redact)
    assert isinstance(out, dict)
    return out


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
