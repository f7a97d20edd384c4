"""Prices per target model, and a recorded request turned into a ledger row with its cost.

    roles:
      openai/strong:
        targets: [{backend: openai, model: gpt-4o, price: {input: 2.5, output: 10}}]   # per 1M tokens

A target without `price` costs 0 (a local model; write an electricity figure to count it). The same
backend and model id under two roles is one target model: its first written price is the one used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aifabric.config.money import Price
from aifabric.config.schema import FabricConfig
from aifabric.tenancy.ledger.record import Pending, UsageRow
from aifabric.tenancy.tokens import LocalTokenizers, estimate_completion, estimate_prompt, parse_usage

__all__ = ["FREE", "Pricing"]

FREE = Price()


@dataclass
class Pricing:
    """The fabric file's prices by (backend, model id), and how to count tokens where none were given."""

    prices: dict[tuple[str, str], Price] = field(default_factory=dict)
    tokenizers: LocalTokenizers = field(default_factory=lambda: LocalTokenizers({}))

    @classmethod
    def from_config(cls, config: FabricConfig, tokenizers: LocalTokenizers | None = None) -> Pricing:
        prices: dict[tuple[str, str], Price] = {}
        for role in config.roles.values():
            for target in role.targets:
                key = (target.backend, target.model)
                if key not in prices or prices[key] == FREE:
                    prices[key] = target.price
        return cls(prices, tokenizers or LocalTokenizers({}))

    def price(self, backend: str, model: str) -> Price:
        return self.prices.get((backend, model), FREE)

    def row(self, p: Pending) -> UsageRow:
        """The ledger row of a recorded request: the backend's token figures, else counted (estimated)."""
        counts = p.reported
        if counts is None and p.usage is not None:
            counts = parse_usage(p.usage)
        estimated = counts is None and bool(p.backend)
        if counts is not None:
            tokens_in, tokens_out = counts
        else:
            # A stream's events were counted on the way through; the prompt is counted here.
            tokens_in = (p.counted[0] if p.counted else 0) or (self._prompt_tokens(p) if p.backend else 0)
            tokens_out = p.counted[1] if p.counted else estimate_completion(p.output) if p.output else 0
        price = self.prices.get((p.backend, p.model), FREE)
        cost = (tokens_in * price.input + tokens_out * price.output) / 1_000_000
        # tuple.__new__: a plain tuple's cost, not a NamedTuple's argument parsing (thousands a second).
        return tuple.__new__(
            UsageRow,
            (
                p.ts,
                p.key,
                p.role,
                p.backend,
                p.model,
                p.endpoint,
                tokens_in,
                tokens_out,
                estimated,
                cost,
                int(p.latency * 1_000_000 + 0.5) / 1000,  # ms to the microsecond: round(x, 3), faster
                p.status,
                p.request_id,
            ),
        )

    def _prompt_tokens(self, p: Pending) -> int:
        if p.payload is None:
            return 0
        counter = self.tokenizers.counter(p.backend)
        if counter is not None:
            return counter(p.payload)
        return estimate_prompt(p.payload)
