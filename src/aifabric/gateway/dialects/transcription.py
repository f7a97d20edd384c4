"""`POST /v1/audio/transcriptions` on roles of kind `transcription`: the client's multipart upload
passed through to the backend's own route (vLLM, llama-server, OpenAI), only its `model` part rewritten.

The body is not parsed beyond the parts' headers: the audio bytes are never copied into a structure,
and the answer (`{"text": ...}`, or text/SRT/VTT as `response_format` asks) is the backend's.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from aifabric.config.schema import ClientApi
from aifabric.errors import BadRequest
from aifabric.gateway.dialects.base import Dialect

__all__ = ["MultipartBody", "TranscriptionDialect"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


class MultipartBody:
    """A multipart/form-data body with its text fields read (`payload`) and `model` replaceable."""

    __slots__ = ("_model_span", "payload", "raw")

    def __init__(self, raw: bytes, content_type: str) -> None:
        match = _BOUNDARY.search(content_type)
        if not content_type.lower().startswith("multipart/form-data") or match is None:
            raise BadRequest(
                "Send the audio as multipart/form-data (a `file` part and a `model` field).",
                code="invalid_body",
            )
        self.raw = raw
        self.payload: dict[str, Any] = {}
        self._model_span: tuple[int, int] | None = None
        delimiter = b"--" + match.group(1).encode("latin-1")
        position = raw.find(delimiter)
        while position != -1:
            head_start = position + len(delimiter) + 2  # past the boundary's CRLF
            head_end = raw.find(b"\r\n\r\n", head_start)
            if head_end == -1:
                break
            following = raw.find(b"\r\n" + delimiter, head_end)
            if following == -1:
                break
            head = raw[head_start:head_end]
            name = _NAME.search(head)
            if name is not None and b"filename=" not in head.lower():
                key = name.group(1).decode("utf-8", "replace")
                if key not in self.payload:  # small text fields only: the file is never decoded
                    self.payload[key] = raw[head_end + 4 : following].decode("utf-8", "replace")
                    if key == "model":
                        self._model_span = (head_end + 4, following)
            position = following + 2
        if self._model_span is None:
            raise BadRequest("You must provide a model parameter.", param="model", code="missing_model")

    def with_model(self, model: str, *, drop: tuple[str, ...] = ()) -> bytes:
        assert self._model_span is not None
        start, end = self._model_span
        return self.raw[:start] + model.encode() + self.raw[end:]


class TranscriptionDialect(Dialect):
    api: ClassVar[ClientApi] = ClientApi.TRANSCRIPTION
    native_path: ClassVar[str] = "/audio/transcriptions"

    def __init__(self, content_type: str) -> None:
        self.sent_content_type = content_type
