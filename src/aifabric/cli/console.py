"""Where commands write: injectable so tests read what an operator would see."""

from __future__ import annotations

import sys
from typing import TextIO

import orjson

__all__ = ["Console"]


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    @property
    def is_tty(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def json(self, value: object) -> None:
        self.out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
        self.out.flush()
