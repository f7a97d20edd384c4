"""Session affinity: the requests of one conversation go to the target that has it in its KV cache.

The key of a request, first found wins:

1. the `x-session-id` header;
2. what agents and SDKs already send: OpenAI's `prompt_cache_key`, then `user`; Anthropic's
   `metadata.user_id`;
3. a hash of the leading messages (chat `messages`, Anthropic `messages` with `system`, Responses
   `input` items with `instructions`): every message up to and including the first user message (the
   system prompt and the opening question stay the same for every turn of a conversation).

The target is chosen by rendezvous hashing (highest random weight, weighted): each target scores
`-weight / ln(u)` with `u` a stable hash of (key, target name), and the best available target wins.
Adding or losing a target moves only the keys it wins or won; nothing else is remapped. The hash is
BLAKE2b, not Python's `hash()`, so every worker and replica of the gateway picks the same target.

The pin holds while its target is available and not overloaded (see `overloaded`); otherwise the
balancer's order stands. Pure, O(targets) per request.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from aifabric.routing.load import estimate, in_flight, process_cap
from aifabric.routing.target import TargetState

__all__ = ["SESSION_HEADER", "overloaded", "pin", "rendezvous", "session_key"]

SESSION_HEADER = "x-session-id"
_MAX_KEY = 256  # longer keys are hashed anyway; this bounds what one request can make us hash


def session_key(headers: Mapping[str, str], payload: Mapping[str, Any]) -> bytes | None:
    """The affinity key of a request (see the module docstring), or None when it has none."""
    header = headers.get(SESSION_HEADER)
    if header:
        return b"h:" + header[:_MAX_KEY].encode()
    for field in ("prompt_cache_key", "user"):
        value = payload.get(field)
        if isinstance(value, str) and value:
            return b"u:" + value[:_MAX_KEY].encode()
    metadata = payload.get("metadata")
    if isinstance(metadata, dict):
        user_id = metadata.get("user_id")
        if isinstance(user_id, str) and user_id:
            return b"u:" + user_id[:_MAX_KEY].encode()
    messages = payload.get("messages")
    if not isinstance(messages, list):
        messages = payload.get("input")  # the Responses API's list of input items
    if isinstance(messages, list) and messages:
        leading = _leading(messages)
        # Anthropic's system prompt, the Responses API's instructions: beside the messages
        system = payload.get("system", payload.get("instructions"))
        try:
            blob = orjson.dumps([system, leading] if system is not None else leading)
        except TypeError:
            return None
        return b"m:" + hashlib.blake2b(blob, digest_size=16).digest()
    return None


def _leading(messages: list[Any]) -> list[Any]:
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return messages[: i + 1]
    return messages[:1]


def _score(key: bytes, t: TargetState) -> float:
    digest = hashlib.blake2b(t.name.encode() + b"\0" + key, digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -t.weight / math.log(u)


def rendezvous(key: bytes, targets: Sequence[TargetState]) -> TargetState | None:
    """The target that wins `key` among `targets` (weighted highest random weight)."""
    best: TargetState | None = None
    best_score = -math.inf
    for t in targets:
        if t.weight <= 0:
            continue
        score = _score(key, t)
        if score > best_score:
            best, best_score = t, score
    return best


# A pinned target of a kind that reports no load (a cloud, Ollama, TEI) and has no `max_concurrency`
# yields only to a marked imbalance of this gateway's own requests: at least twice, and at least this
# many more than, the least busy other target of the role would carry at its weight. A follow-up turn
# that moves loses its cached prefix, so the statistical unevenness of hashing a handful of
# conversations onto a few targets must not move it; one hot session (an agent's parallel calls under
# one key) piling up on one target while another idles must.
IMBALANCE_FACTOR = 2.0
IMBALANCE_EXCESS = 4.0


def overloaded(t: TargetState, others: Sequence[TargetState] = (), share: float = 1.0) -> bool:
    """Whether a request pinned to `t` would queue there, so it goes elsewhere:

    - its backend has a `max_concurrency` and this process's part of it (`share`) is all in flight:
      the request would wait in the gateway's own queue;
    - its engine reports requests waiting (the load estimate of routing.load);
    - a kind without a load signal and without a cap: this gateway has markedly more requests in
      flight there than at the least busy of `others` (the role's other available targets), by
      IMBALANCE_FACTOR and IMBALANCE_EXCESS, per weight.
    """
    cap = t.backend.max_concurrency
    busy = in_flight(t)
    if cap is not None and busy >= process_cap(cap, share):
        return True
    est = estimate(t)
    if est.signal:
        return est.waiting > 0
    if cap is not None or busy < IMBALANCE_EXCESS or t.weight <= 0:
        return False  # under its cap: the operator said it takes that many at once
    least = min((in_flight(o) / o.weight for o in others if o is not t and o.weight > 0), default=None)
    if least is None:
        return False
    fair = least * t.weight  # what it would carry at the least busy other's load per weight
    return busy >= max(IMBALANCE_FACTOR * fair, fair + IMBALANCE_EXCESS)


def pin(
    key: bytes,
    own: Sequence[TargetState],
    candidates: list[TargetState],
    now: float,
    share: float = 1.0,
) -> bool:
    """Move the key's target among the role's own targets (`own`) to the front of `candidates` when
    it is available and not overloaded (`share`: this process's part of the backends' caps); True
    when it did (the request is pinned)."""
    available = [t for t in own if t.available(now)]
    chosen = rendezvous(key, available)
    if chosen is None or overloaded(chosen, available, share):
        return False
    try:
        candidates.remove(chosen)
    except ValueError:
        return False
    candidates.insert(0, chosen)
    return True
