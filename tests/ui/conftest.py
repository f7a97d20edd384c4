"""Fixtures of the status page tests: the estate (see ui_estate)."""

from ui_estate import estate

__all__ = ["estate"]
