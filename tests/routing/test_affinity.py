"""Session affinity: the key of a request, the consistent (rendezvous) hash, and when a pin yields."""

from __future__ import annotations

import random
from collections import Counter

from routing_support import MakeTarget

from aifabric.core import BackendState
from aifabric.routing.affinity import overloaded, pin, rendezvous, session_key
from aifabric.routing.balance import order_candidates

SYSTEM = {"role": "system", "content": "You are terse."}
FIRST = {"role": "user", "content": "Plan a trip to Lyon."}


def test_the_key_comes_from_the_header_then_the_fields_agents_send_then_the_leading_messages() -> None:
    payload = {
        "messages": [SYSTEM, FIRST],
        "prompt_cache_key": "pck-1",
        "user": "u-1",
        "metadata": {"user_id": "anthropic-user"},
    }
    assert session_key({"x-session-id": "s-1"}, payload) == b"h:s-1"
    assert session_key({}, payload) == b"u:pck-1"
    del payload["prompt_cache_key"]
    assert session_key({}, payload) == b"u:u-1"
    del payload["user"]
    assert session_key({}, payload) == b"u:anthropic-user"  # Anthropic Messages' metadata.user_id
    del payload["metadata"]
    hashed = session_key({}, payload)
    assert hashed is not None and hashed.startswith(b"m:")
    assert session_key({}, {"input": "an embedding"}) is None


def test_every_turn_of_a_conversation_has_the_same_key_and_other_conversations_another() -> None:
    turn1 = {"messages": [SYSTEM, FIRST]}
    turn3 = {
        "messages": [
            SYSTEM,
            FIRST,
            {"role": "assistant", "content": "Take the TGV."},
            {"role": "user", "content": "And back?"},
        ]
    }
    other = {"messages": [SYSTEM, {"role": "user", "content": "Plan a trip to Nantes."}]}
    assert session_key({}, turn1) == session_key({}, turn3)
    assert session_key({}, turn1) != session_key({}, other)
    # Anthropic's system prompt is a field beside the messages: it is part of the conversation too.
    assert session_key({}, {"system": "a", "messages": [FIRST]}) != session_key(
        {}, {"system": "b", "messages": [FIRST]}
    )


def _assign(keys: list[bytes], targets: list) -> dict[bytes, str]:  # type: ignore[type-arg]
    out = {}
    for k in keys:
        chosen = rendezvous(k, targets)
        assert chosen is not None
        out[k] = chosen.backend.name
    return out


def test_losing_or_adding_a_target_moves_only_its_share(make_target: MakeTarget) -> None:
    a, b, c, d = (make_target(n) for n in "abcd")
    keys = [f"session-{i}".encode() for i in range(3000)]
    three = _assign(keys, [a, b, c])
    shares = Counter(three.values())
    assert all(800 < shares[n] < 1200 for n in "abc"), shares
    two = _assign(keys, [a, b])  # c is lost: only c's sessions move
    assert all(two[k] == three[k] for k in keys if three[k] != "c")
    four = _assign(keys, [a, b, c, d])  # d is added: sessions move only to d
    moved = [k for k in keys if four[k] != three[k]]
    assert all(four[k] == "d" for k in moved)
    assert 600 < len(moved) < 900  # about a quarter


def test_weights_share_the_sessions(make_target: MakeTarget) -> None:
    heavy, light = make_target("heavy", weight=3.0), make_target("light")
    shares = Counter(_assign([f"k{i}".encode() for i in range(4000)], [heavy, light]).values())
    assert 0.70 < shares["heavy"] / 4000 < 0.80


def test_the_pinned_target_leads_while_it_is_available_and_has_room(make_target: MakeTarget) -> None:
    a, b = make_target("a"), make_target("b")
    for t in (a, b):
        t.health.load = {"requests_running": 1.0, "requests_waiting": 0.0}
    key = next(k for k in (f"s{i}".encode() for i in range(100)) if rendezvous(k, [a, b]) is b)
    a.health.load = {"requests_running": 0.0, "requests_waiting": 0.0}  # least_load alone prefers a
    candidates = order_candidates([a, b], 0.0, random.Random(0), "least_load")
    assert [t.backend.name for t in candidates] == ["a", "b"]
    assert pin(key, [a, b], candidates, 0.0)
    assert [t.backend.name for t in candidates] == ["b", "a"]

    b.health.load = {"requests_running": 8.0, "requests_waiting": 2.0}  # b queues: the pin yields
    assert overloaded(b)
    candidates = order_candidates([a, b], 0.0, random.Random(0), "least_load")
    assert not pin(key, [a, b], candidates, 0.0)
    assert candidates[0] is a

    b.health.load = {}
    b.health.state = BackendState.DOWN  # b lost: its sessions go to the others, by the same hash
    candidates = order_candidates([a, b], 0.0, random.Random(0), "least_load")
    assert pin(key, [a, b], candidates, 0.0)
    assert candidates[0] is a


def test_a_target_at_its_max_concurrency_is_overloaded_whatever_its_kind(make_target: MakeTarget) -> None:
    for kind in ("openai", "ollama", "tei", "vllm"):
        t = make_target(f"capped-{kind}", kind=kind, max_concurrency=2)
        t.health.in_flight = 1
        assert not overloaded(t), kind
        t.health.in_flight = 2
        assert overloaded(t), kind
        # Two gateway processes share the cap: this one's part (1) is in flight already.
        t.health.in_flight = 1
        assert overloaded(t, share=0.5), kind
    # Under its cap, a kind without signals keeps the pin even while the other target idles.
    capped = make_target("capped", kind="openai", max_concurrency=20)
    idle = make_target("idle", kind="openai")
    capped.health.in_flight = 12
    assert not overloaded(capped, [capped, idle])


def test_without_a_cap_a_kind_without_signals_yields_only_to_a_marked_imbalance(
    make_target: MakeTarget,
) -> None:
    home, other = make_target("home", kind="ollama"), make_target("other", kind="ollama")
    role = [home, other]
    home.health.in_flight = 3  # the unevenness of hashing a few conversations: the pin holds
    assert not overloaded(home, role)
    home.health.in_flight = 4  # four more than an idle other: the fifth goes there
    assert overloaded(home, role)
    assert not overloaded(home, [home])  # no other target to go to: nothing to compare with
    other.health.in_flight = 4  # the other is busy too: twice its load is needed (8)
    assert not overloaded(home, role)
    home.health.in_flight = 8
    assert overloaded(home, role)
    # Weights: a target of weight 3 is meant to carry three times the load.
    heavy, light = make_target("heavy", kind="openai", weight=3.0), make_target("light", kind="openai")
    light.health.in_flight = 2
    heavy.health.in_flight = 11
    assert not overloaded(heavy, [heavy, light])
    heavy.health.in_flight = 12
    assert overloaded(heavy, [heavy, light])


def test_the_pin_of_a_kind_without_signals_moves_when_it_is_overloaded_and_comes_back(
    make_target: MakeTarget,
) -> None:
    a, b = (make_target(name, kind="openai", max_concurrency=1) for name in "ab")
    key = next(k for k in (f"s{i}".encode() for i in range(100)) if rendezvous(k, [a, b]) is a)
    candidates = [b, a]
    assert pin(key, [a, b], candidates, 0.0)
    assert candidates[0] is a
    a.health.in_flight = 1  # its one place is taken: the request goes to b rather than queue for a
    candidates = [b, a]
    assert not pin(key, [a, b], candidates, 0.0)
    assert candidates == [b, a]
    a.health.in_flight = 0
    candidates = [b, a]
    assert pin(key, [a, b], candidates, 0.0)
    assert candidates[0] is a


def test_responses_input_items_and_instructions_are_a_conversation_too() -> None:
    turn1 = {"instructions": "Be brief.", "input": [FIRST]}
    turn2 = {"instructions": "Be brief.", "input": [FIRST, {"role": "assistant", "content": "ok"}, FIRST]}
    assert session_key({}, turn1) == session_key({}, turn2)
    assert session_key({}, turn1) != session_key({}, {"instructions": "Be long.", "input": [FIRST]})
