"""The effective configuration as plain data: every default filled in, every secret redacted.

The result has the shape of a fabric file (names as keys, durations in seconds), so what `aifabric
config show` prints can be read back by the loader, secrets aside.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from aifabric.config.money import Budget
from aifabric.config.schema import FabricConfig, Secret

__all__ = ["REDACTED", "config_secrets", "config_to_dict", "is_url", "redact_url", "redact_values"]

REDACTED = "********"

# Fields that are keys of their section in the file, or facts about the load rather than settings.
_IMPLIED = {"name", "source", "loaded"}

_MIN_SECRET = 4  # a secret shorter than this is not hunted for by value (it would mask common words)
# Query values hunted for by value everywhere (logs, error bodies, reasons): those whose name says
# credential, and any long opaque one. (`redact_url` masks every query value of a URL it shows; hunting
# `?application_name=aifabric` by value would mask the product's own name in every message.)
_SECRET_QUERY_NAME = re.compile(r"(?i)key|token|secret|pass|pwd|auth|sig|credential|session|code")
_LONG_QUERY_VALUE = 20


def config_to_dict(cfg: FabricConfig, *, redact: bool = True) -> dict[str, Any]:
    """`cfg` as nested dicts/lists/scalars. With `redact` (the default) every `Secret` is `"********"`,
    every URL-valued setting goes through `redact_url`, and every secret value of the file is masked
    wherever else it appears; never a prefix or a length of the value."""
    out = _value(cfg, redact)
    assert isinstance(out, dict)
    return redact_values(out, config_secrets(cfg)) if redact else out


def config_secrets(cfg: FabricConfig) -> frozenset[str]:
    """Every secret value a fabric file holds, for redaction by value: each `Secret` (gateway, admin
    and backend keys) and the password and query values of each URL-valued setting, wherever it is
    (backends, state, keys, usage, tracing, alert sinks): found by walking the config, not by a list
    of fields that a new setting could miss."""
    found: set[str] = set()
    for value in _leaves(cfg):
        if isinstance(value, Secret):
            found.add(value.reveal())
        elif is_url(value):
            found.update(_url_secrets(value))
    return frozenset(s for s in found if len(s) >= _MIN_SECRET)


def is_url(value: object) -> TypeGuard[str]:
    """The one rule for which settings are URLs: a string `scheme://...` (a sink's command is not)."""
    if not isinstance(value, str):
        return False
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme[:1].isalpha() and scheme.replace("+", "").replace("-", "").isalnum()


def _leaves(value: object) -> Iterator[object]:
    """Every scalar of a config (dataclasses, dicts, lists), `Secret`s included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.name not in _IMPLIED:
                yield from _leaves(getattr(value, f.name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [unquote(password), password] if password else []
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        # Named like a credential: as short as a userinfo password may be (`?password=hunter2`).
        if len(value) >= _LONG_QUERY_VALUE or (
            len(value) >= _MIN_SECRET and _SECRET_QUERY_NAME.search(name) is not None
        ):
            found.extend((value, quote(value, safe=""), quote_plus(value, safe="")))
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


def _value(value: object, redact: bool) -> Any:
    if isinstance(value, Secret):
        return REDACTED if redact else value.reveal()
    if isinstance(value, Budget):
        return str(value)  # as written in the file: 50/month
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _value(getattr(value, f.name), redact)
            for f in dataclasses.fields(value)
            if f.name not in _IMPLIED
        }
    if isinstance(value, dict):
        return {str(k): _value(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v, redact) for v in value]
    if redact and is_url(value):
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """`url` safe to show: the password of its userinfo and every query value masked
    (`redis://:********@host:6379/0?password=********`); host, path and query names stay readable."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (a sink's command, say)
        return url
    if password is None and not parts.query:
        return url
    # Rebuilt by hand, not by urlunsplit, which turns `unix:///path` into `unix:/path`.
    head, _, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    if password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        head = head.replace(parts.netloc, f"{user}:{REDACTED}@{host}", 1)
    if not query:
        return head + (f"?{query}{hash_}{fragment}" if rest else "")
    fields = query.split("&")
    query = "&".join(f"{f.partition('=')[0]}={REDACTED}" if "=" in f else f for f in fields)
    return f"{head}?{query}{hash_}{fragment}"
