"""Model-id drift: the ids a backend serves against the ids the fabric file sends it.

The runbook's "Embeddings return 404" incident was exactly this: the gateway asked for
`bge-base-en-v1.5`, vLLM served `BAAI/bge-base-en-v1.5`. The message names both and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence

__all__ = ["check_models", "closest_model", "exact_match"]

Matcher = Callable[[str, Sequence[str]], bool]


def exact_match(model: str, served: Sequence[str]) -> bool:
    return model in served


def closest_model(model: str, served: Sequence[str]) -> str | None:
    """The served id an operator most likely meant, or None when nothing is close."""
    if not served:
        return None
    lower = model.lower()
    # The commonest drift: the same name with or without an organisation prefix, or another case.
    for candidate in served:
        c = candidate.lower()
        if c == lower or c.rsplit("/", 1)[-1] == lower.rsplit("/", 1)[-1]:
            return candidate
    by_lower = {s.lower(): s for s in served}
    close = difflib.get_close_matches(lower, list(by_lower), n=1, cutoff=0.5)
    if close:
        return by_lower[close[0]]
    if len(served) == 1:
        return served[0]
    return None


def check_models(
    configured: Iterable[str],
    served: Sequence[str],
    backend_name: str,
    *,
    matches: Matcher = exact_match,
) -> list[str]:
    """One message per configured id the backend does not serve; [] when all match or unknown.

    An empty `served` means the probe could not list models: nothing can be said, so nothing is.
    """
    if not served:
        return []
    messages: list[str] = []
    for model in dict.fromkeys(configured):  # ordered, without repeats
        if matches(model, served):
            continue
        suggestion = closest_model(model, served)
        if suggestion is not None:
            messages.append(
                f"config says {model}, {backend_name} serves {suggestion}: set the target's model to "
                f"{suggestion!r} in the fabric file, or have {backend_name} serve {model!r}"
            )
        else:
            shown = ", ".join(served[:5]) + (f" (+{len(served) - 5} more)" if len(served) > 5 else "")
            messages.append(
                f"config says {model}, {backend_name} does not serve it (it serves {shown}): "
                f"load {model!r} on {backend_name} or point the target at a model it serves"
            )
    return messages
