"""A streamed chat completion as OpenAI's Responses stream, event by event (see `dialects.responses`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from aifabric.gateway.dialects.base import ChatStreamTranslator
from aifabric.gateway.dialects.responses import as_dict, call_item, new_id, set_status, text_item, usage_of

__all__ = ["ResponsesStream"]


class ResponsesStream(ChatStreamTranslator):
    """Chat-completion SSE chunks in, Responses SSE events out, as each chunk arrives.

        first chunk     response.created, response.in_progress (with the model the chunk names)
        per chunk       a content delta: (output_item.added, content_part.added,) output_text.delta
                        a tool-call delta: (the text item closed, output_item.added,)
                        function_call_arguments.delta
        the end         every open item closed (...done events), then response.completed (or
                        response.incomplete for a length cut) with the usage
        an error        (a backend that failed mid-stream): error, then response.failed

    Every event carries `sequence_number`. Only the text and arguments are kept (the done events and
    the final Response repeat them); nothing is held back from the client. Without a usage chunk
    upstream (`estimated_input` given), the usage is estimated: one token per delta.
    """

    def __init__(
        self,
        skeleton: dict[str, Any],
        clock: Callable[[], float],
        *,
        estimated_input: int | None = None,
    ) -> None:
        super().__init__()
        self.response = skeleton
        self._clock = clock
        self._estimated_input = estimated_input
        self._deltas = 0
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._text: dict[str, Any] | None = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its open item
        self._finish: Any = None
        self._usage: dict[str, Any] | None = None
        self.ended = False  # completed, incomplete or failed: nothing more is written

    def _event(self, kind: str, **fields: Any) -> bytes:
        fields = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(fields) + b"\n\n"

    def _start(self, model: Any = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        if isinstance(model, str) and model:
            self.response["model"] = model
        return self._event("response.created", response=self.response) + self._event(
            "response.in_progress", response=self.response
        )

    def on_chunk(self, chunk: dict[str, Any]) -> bytes:
        if self.ended:
            return b""
        out = [self._start(chunk.get("model"))]
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._deltas += 1
                out.append(self._text_delta(content))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._deltas += 1
                    out.append(self._call_delta(call))
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def on_error(self, error: dict[str, Any]) -> bytes:
        return self.fail(str(error.get("message") or "the backend failed mid-stream"), error.get("code"))

    def on_end(self) -> bytes:
        if self.ended:
            return b""
        return self._start() + self._complete()

    def _text_delta(self, delta: str) -> bytes:
        out = b""
        if self._text is None:
            item = text_item(new_id("msg"), "", "in_progress")
            item["content"] = []
            self._text = item
            self._output.append(item)
            index = len(self._output) - 1
            out += self._event("response.output_item.added", output_index=index, item=item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            item["content"] = [dict(part)]
        item = self._text
        item["content"][0]["text"] += delta
        return out + self._event(
            "response.output_text.delta",
            item_id=item["id"],
            output_index=self._output.index(item),
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _close_text(self) -> bytes:
        item = self._text
        if item is None:
            return b""
        self._text = None
        index = self._output.index(item)
        status = "incomplete" if self._finish == "length" else "completed"
        part = item["content"][0]
        item["status"] = status
        return (
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            + self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = as_dict(call.get("function"))
        out = b""
        item = self._calls.get(index)
        if item is None:
            out += self._close_text()  # text before a call is a finished message item
            item = call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                "",
                "in_progress",
            )
            self._calls[index] = item
            self._output.append(item)
            out += self._event("response.output_item.added", output_index=len(self._output) - 1, item=item)
        elif function.get("name") and not item["name"]:
            item["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=self._output.index(item),
                delta=arguments,
            )
        return out

    def _close_calls(self) -> bytes:
        out = b""
        for item in self._calls.values():
            index = self._output.index(item)
            item["status"] = "completed"
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                name=item["name"],
                output_index=index,
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._calls = {}
        return out

    def _complete(self) -> bytes:
        out = self._close_text() + self._close_calls()
        self.ended = True
        response = dict(self.response)
        response["output"] = self._output
        usage = self._usage
        if usage is None and self._estimated_input is not None:
            prompt, completion = self._estimated_input, self._deltas
            usage = usage_of(
                {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
            )
        if usage is not None:
            response["usage"] = usage
        set_status(response, self._finish, int(self._clock()))
        self.response = response
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=response)

    def fail(self, message: str, code: Any = None) -> bytes:
        """The stream was cut (a backend failed mid-stream): `error`, then `response.failed`."""
        if self.ended:
            return b""
        start = self._start()
        self.ended = True
        response = dict(self.response)
        response["output"] = self._output
        response["status"] = "failed"
        response["error"] = {"code": "server_error", "message": message}
        self.response = response
        error = self._event(
            "error", code=str(code) if code is not None else None, message=message, param=None
        )
        return start + error + self._event("response.failed", response=response)
