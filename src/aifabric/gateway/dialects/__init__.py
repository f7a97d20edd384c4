"""Client APIs other than chat completions, one module per dialect; see `dialects.base`."""

from aifabric.gateway.dialects.base import ChatStreamTranslator, Dialect, StreamTranslator, sse_events

__all__ = ["ChatStreamTranslator", "Dialect", "StreamTranslator", "sse_events"]
