"""Request ids: the client's `x-request-id` when it sends a usable one, else one made here.

Every answer carries it (forwarded ones, the gateway's own errors, the listener's 400/408/413/431, the
operator views) and every error body names it: it is what an operator searches the log for.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["new_request_id", "request_id", "shown"]

_MAX_INCOMING = 128
_SHOWN = 200  # characters of a client's text (a model name, a path) echoed back in an error


def _new_id_source() -> tuple[itertools.count[int], str]:
    return itertools.count(1), f"{os.getpid():x}-{os.urandom(3).hex()}-"


_ids, _id_prefix = _new_id_source()


def _reset_ids_after_fork() -> None:
    # Workers fork from one parent: without this they would all count from the same prefix.
    global _ids, _id_prefix
    _ids, _id_prefix = _new_id_source()


os.register_at_fork(after_in_child=_reset_ids_after_fork)


def new_request_id() -> str:
    return _id_prefix + str(next(_ids))


def request_id(headers: dict[str, str]) -> str:
    incoming = headers.get("x-request-id")
    if incoming and len(incoming) <= _MAX_INCOMING and incoming.isprintable():
        return incoming
    return new_request_id()


def shown(text: str, limit: int = _SHOWN) -> str:
    """A client's text as an error message quotes it: cut to `limit` characters, and encodable."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
