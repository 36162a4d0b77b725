"""OpenAI's response shapes: chat and completion bodies, SSE chunks, usage, logprobs.

The routes (openai_routes.py) turn a request into a turn and its events into these; nothing
here knows the engine or the pipeline beyond the neutral events.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from hoshikage import __version__
from hoshikage.api.errors import as_api_error
from hoshikage.api.service import TurnRun
from hoshikage.engine.types import Candidate, TokenLogprob
from hoshikage.turns.vocabulary import (
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    TurnEvent,
    TurnFinished,
)

log = logging.getLogger("hoshikage.api.openai")

FINGERPRINT = f"hoshikage-{__version__}"
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "cancelled": "length",
    "tool_calls": "tool_calls",
}


def usage_of(finished: TurnFinished, run: TurnRun, *, chat: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": finished.usage.prompt_tokens,
        "completion_tokens": finished.usage.completion_tokens,
        "total_tokens": finished.usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": finished.usage.cached_prompt_tokens},
    }
    if chat:
        usage["dropped_messages"] = run.dropped_messages
    return usage


def sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """One usage for several choices (a request of several prompts)."""
    total: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    cached = 0
    for usage in usages:
        for key in total:
            total[key] += usage[key]
        cached += usage["prompt_tokens_details"]["cached_tokens"]
    total["prompt_tokens_details"] = {"cached_tokens": cached}
    return total


def sse(payload: dict[str, Any] | str) -> str:
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n"


def stream_error(exc: Exception) -> str:
    """An error after the stream began: the openai client raises it as an APIError."""
    error = as_api_error(exc)
    if error.status >= 500:
        log.error("stream failed: %s", exc)
    return sse(
        {
            "error": {
                "message": error.message,
                "type": "server_error",
                "param": None,
                "code": error.code or "generation_failed",
            }
        }
    )


@dataclasses.dataclass(frozen=True)
class Reply:
    """What every chunk of one answer shares."""

    id: str
    model: str
    created: int
    object: str
    include_usage: bool

    @classmethod
    def new(cls, prefix: str, model: str, object_: str, include_usage: bool = False) -> Reply:
        return cls(
            id=f"{prefix}-{secrets.token_hex(12)}",
            model=model,
            created=int(time.time()),
            object=object_,
            include_usage=include_usage,
        )

    def envelope(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = None  # as OpenAI does: null on every chunk but the last
        body.update(extra)
        return body


def chat_delta(event: TurnEvent) -> dict[str, Any] | None:
    """The `delta` of a chat chunk for one event; None for events that show nothing."""
    if isinstance(event, TextDelta):
        return {"content": event.text}
    if isinstance(event, ReasoningDelta):
        return {"reasoning_content": event.text}
    if isinstance(event, ToolCallStarted):
        function = {"name": event.name, "arguments": ""}
        call = {"index": event.index, "id": event.id, "type": "function", "function": function}
        return {"tool_calls": [call]}
    if isinstance(event, ToolCallDelta):
        return {"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]}
    return None


def chat_message(finished: TurnFinished) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI's: null content beside tool calls when the model said nothing else.
        "content": finished.text if finished.text or not finished.tool_calls else None,
        "refusal": None,
    }
    if finished.reasoning:
        message["reasoning_content"] = finished.reasoning
    if finished.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in finished.tool_calls
        ]
    return message


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's `logprobs`: one entry per token, with its most likely alternatives."""
    return {"content": [_chat_entry(entry) for entry in entries], "refusal": None}


def _chat_entry(entry: TokenLogprob) -> dict[str, Any]:
    return {**_candidate(entry.chosen), "top_logprobs": [_candidate(c) for c in entry.top]}


def _candidate(candidate: Candidate) -> dict[str, Any]:
    return {"token": candidate.text, "logprob": candidate.logprob, "bytes": list(candidate.bytes)}


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """A completion choice's legacy `logprobs`: parallel lists, offsets into the text."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.chosen.text)
    return {
        "tokens": [entry.chosen.text for entry in entries],
        "token_logprobs": [entry.chosen.logprob for entry in entries],
        "top_logprobs": [{c.text: c.logprob for c in entry.top} for entry in entries],
        "text_offset": offsets,
    }
