"""Anthropic's Messages API under /v1/messages, as the `anthropic` SDK and Claude Code use it.

A thin wire format over the turn pipeline: the request becomes a `TurnRequest` (system
blocks, text / tool_use / tool_result / thinking blocks, tools with `input_schema`,
`tool_choice` auto / any / tool (the name honoured) / none, `thinking` on or off), and the
turn's events become Anthropic's content blocks, or its server-sent events: `message_start`,
`ping`, `content_block_start` / `content_block_delta` (`text_delta`, `input_json_delta`,
`thinking_delta`) / `content_block_stop`, `message_delta` (stop reason, usage),
`message_stop`. Errors are `{"type": "error", "error": {...}}` (api/errors.py).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from hoshikage.api.anthropic_schemas import CountTokensRequest, MessagesRequest
from hoshikage.api.deps import namespace_of, run_headers, state_of
from hoshikage.api.errors import as_api_error
from hoshikage.api.service import TurnRun
from hoshikage.api.streaming import OpenedRun, RunStream, client_gone, wait_or_disconnect
from hoshikage.engine import SamplingParams
from hoshikage.runtime import sampling_defaults, sampling_with
from hoshikage.turns.vocabulary import (
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
    TurnEvent,
    TurnFinished,
    TurnRequest,
)

log = logging.getLogger("hoshikage.api.anthropic")

router = APIRouter(prefix="/v1", tags=["Anthropic Messages API"])

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "cancelled": "max_tokens",  # cut short by the server: incomplete, as max_tokens says
    "tool_calls": "tool_use",
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _params(request: Request, body: MessagesRequest) -> SamplingParams:
    stops = None if body.stop_sequences is None else tuple(body.stop_sequences)
    return sampling_with(
        state_of(request).settings,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        max_tokens=body.max_tokens,
        stop=stops,
    )


def _turn(request: Request, body: MessagesRequest) -> TurnRequest:
    user = body.metadata.user_id if body.metadata else None
    return TurnRequest(
        model=body.model,
        messages=body.engine_messages(),
        params=_params(request, body),
        tool_use=body.tool_use(),
        reasoning=body.reasoning(),
        keep_alive=body.keep_alive,
        namespace=namespace_of(request, user),
    )


def _usage(finished: TurnFinished | None, run: TurnRun) -> dict[str, Any]:
    cached = finished.usage.cached_prompt_tokens if finished else 0
    return {
        # Anthropic counts the prompt tokens read from cache apart from the others.
        "input_tokens": run.prompt_tokens - cached,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": finished.usage.completion_tokens if finished else 0,
    }


def _message(
    message_id: str, model: str, content: list[dict[str, Any]], **rest: Any
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        **rest,
    }


def _blocks(finished: TurnFinished) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if finished.reasoning:
        blocks.append({"type": "thinking", "thinking": finished.reasoning, "signature": ""})
    if finished.text or not finished.tool_calls:
        blocks.append({"type": "text", "text": finished.text})
    blocks += [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments_object()}
        for call in finished.tool_calls
    ]
    return blocks


def _event(name: str, payload: dict[str, Any]) -> str:
    data = json.dumps({"type": name, **payload}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n"


class _BlockStream:
    """Opens and closes content blocks as the kind of event changes."""

    def __init__(self) -> None:
        self.index = -1
        self.open_kind: str | None = None

    def start(self, block: dict[str, Any]) -> list[str]:
        out = self.stop()
        self.index += 1
        self.open_kind = block["type"]
        out.append(_event("content_block_start", {"index": self.index, "content_block": block}))
        return out

    def stop(self) -> list[str]:
        if self.open_kind is None:
            return []
        self.open_kind = None
        return [_event("content_block_stop", {"index": self.index})]

    def delta(self, delta: dict[str, Any]) -> str:
        return _event("content_block_delta", {"index": self.index, "delta": delta})

    def render(self, event: TurnEvent) -> list[str]:
        if isinstance(event, ReasoningDelta):
            out = (
                []
                if self.open_kind == "thinking"
                else self.start({"type": "thinking", "thinking": ""})
            )
            return [*out, self.delta({"type": "thinking_delta", "thinking": event.text})]
        if isinstance(event, TextDelta):
            out = [] if self.open_kind == "text" else self.start({"type": "text", "text": ""})
            return [*out, self.delta({"type": "text_delta", "text": event.text})]
        if isinstance(event, ToolCallStarted):
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            return self.start(block)
        if isinstance(event, ToolCallDelta):
            return [self.delta({"type": "input_json_delta", "partial_json": event.arguments})]
        if isinstance(event, ToolCallEnded):
            return self.stop()
        return []


async def _stream(opened: OpenedRun, message_id: str, model: str) -> AsyncGenerator[str, None]:
    run = opened.run
    start = _message(message_id, model, [], usage=_usage(None, run))
    yield _event("message_start", {"message": start})
    yield _event("ping", {})
    blocks = _BlockStream()
    try:
        async for event in opened.events():
            for piece in blocks.render(event):
                yield piece
    except Exception as exc:  # the stream has begun: Anthropic's error event ends it
        await opened.close()
        error = as_api_error(exc)
        yield _event("error", {"error": {"type": "api_error", "message": error.message}})
        return
    finished = run.finished
    assert finished is not None
    if blocks.index < 0:  # an empty answer is still one (empty) text block
        for piece in blocks.start({"type": "text", "text": ""}):
            yield piece
    for piece in blocks.stop():
        yield piece
    await opened.close()  # a session's turn is stored before the client hears the end
    delta = {"stop_reason": STOP_REASONS[finished.finish_reason], "stop_sequence": None}
    yield _event("message_delta", {"delta": delta, "usage": _usage(finished, run)})
    yield _event("message_stop", {})


@router.post("/messages", summary="Create a message (Anthropic)", response_model=None)
async def messages(body: MessagesRequest, request: Request) -> Response:
    """Anthropic's Messages API: text, tools (tool_choice auto / any / tool / none), thinking,
    streamed as Anthropic's server-sent events or whole."""
    state = state_of(request)
    opened = await OpenedRun.open(request, state.service.chat(_turn(request, body)))
    if opened is None:
        return client_gone()
    message_id = f"msg_{secrets.token_hex(12)}"
    headers = run_headers(opened.run)
    if body.stream:
        return RunStream(
            _stream(opened, message_id, body.model),
            opened=opened,
            media_type="text/event-stream",
            headers=headers | SSE_HEADERS,
        )
    try:
        finished = await wait_or_disconnect(request, opened.finish())
    finally:
        await opened.close()
    if finished is None:
        return client_gone()
    reply = _message(
        message_id,
        body.model,
        _blocks(finished),
        stop_reason=STOP_REASONS[finished.finish_reason],
        usage=_usage(finished, opened.run),
    )
    return JSONResponse(reply, headers=headers)


@router.post("/messages/count_tokens", summary="Count a message's tokens (Anthropic)")
async def count_tokens(body: CountTokensRequest, request: Request) -> dict[str, int]:
    """The input tokens a message request would take: system, messages and tools."""
    state = state_of(request)
    turn = TurnRequest(
        model=body.model,
        messages=body.engine_messages(),
        params=sampling_defaults(state.settings),
        tool_use=body.tool_use(),
        reasoning=body.reasoning(),
    )
    return {"input_tokens": await state.service.count_tokens(turn)}
