"""Logging: JSON lines (for files and collectors) or plain text (for a terminal), secrets redacted.

Secrets are redacted by value: every secret the fabric file holds is registered here when the config
loads, and the formatter replaces it wherever it would appear, whatever logged it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from aifabric.config.schema import FabricConfig

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "redact",
    "redact_cut",
    "register_config_secrets",
    "register_secret",
]

_secrets: set[str] = set()
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


def register_secret(value: str) -> None:
    if value and len(value) >= 4:
        _secrets.add(value)


def register_config_secrets(config: FabricConfig) -> None:
    """Every secret of a fabric file (gateway keys, backend keys), so no log line can carry one."""
    from aifabric.config.show import config_secrets

    for secret in config_secrets(config):
        register_secret(secret)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "********")
    return _BEARER.sub(r"\1********", text)


def redact_cut(text: str) -> str:
    """`redact`, and also a secret's beginning (4 characters or more) at the very end of `text`: for
    text cut short, as the last bytes of a stream that broke off in the middle of a quoted key."""
    text = redact(text)
    for secret in _secrets:
        for n in range(len(secret) - 1, 3, -1):
            if text.endswith(secret[:n]):
                text = text[:-n] + "********"
                break
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("request_id", "key", "role", "backend", "attempts", "status", "duration_ms", "client"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Root logging for a command. JSON when stderr is not a terminal, unless told otherwise."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
