"""OpenAI's Responses API under /v1/responses — with the state llama-server and Ollama lack.

A thin wire format over the turn pipeline. A stored response (`store`, the default) lives in
a session of the caller's: `previous_response_id` continues that session, so only the new
input is sent and evaluated (the slot's KV cache holds the rest, and
`usage.input_tokens_details.cached_tokens` says how much), and the conversation gets the
session's memory and summaries. Streaming uses the Responses event types, each with a
`sequence_number`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from hoshikage.api.deps import namespace_of, run_headers, state_of
from hoshikage.api.errors import ApiError, as_api_error
from hoshikage.api.responses_schemas import ResponsesRequest
from hoshikage.api.service import TurnRun
from hoshikage.api.streaming import OpenedRun, RunStream, client_gone, wait_or_disconnect
from hoshikage.engine import SamplingParams
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.runtime import sampling_with
from hoshikage.store import StoreError
from hoshikage.store.responses import ResponseRecord, ResponseStore
from hoshikage.store.sessions import owner_of
from hoshikage.turns.vocabulary import (
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
    TurnFinished,
    TurnRequest,
)

router = APIRouter(prefix="/v1", tags=["OpenAI Responses API"])


def _params(request: Request, body: ResponsesRequest) -> SamplingParams:
    grammar = None
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type == "json_object":
        grammar = JSON_OBJECT_GBNF
    elif fmt is not None and fmt.type == "json_schema":
        grammar = json_schema_grammar(fmt.schema_ or {"type": "object"})
    return sampling_with(
        state_of(request).settings,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_output_tokens,
        grammar=grammar,
    )


def _store(request: Request) -> ResponseStore:
    return ResponseStore(state_of(request).database)


def _usage(finished: TurnFinished, run: TurnRun) -> dict[str, Any]:
    usage = finished.usage
    return {
        "input_tokens": run.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": run.prompt_tokens + usage.completion_tokens,
    }


def _output(finished: TurnFinished, ids: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if finished.reasoning:
        items.append(_reasoning_item(ids["reasoning"], finished.reasoning))
    if finished.text or not finished.tool_calls:
        items.append(_message_item(ids["message"], finished.text, "completed"))
    items += [
        _call_item(f"fc_{call.id}", call.id, call.name, call.arguments, "completed")
        for call in finished.tool_calls
    ]
    return items


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _response(
    response_id: str,
    body: ResponsesRequest,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.model,
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions,
        "previous_response_id": body.previous_response_id,
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or ()],
        "tool_choice": _choice(body),
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_output_tokens": body.max_output_tokens,
        "store": body.store,
        "metadata": body.metadata or {},
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "user": body.user,
    }


def _choice(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        return choice or "auto"
    return choice.model_dump()


def _status(finished: TurnFinished) -> str:
    return "incomplete" if finished.finish_reason in ("length", "cancelled") else "completed"


async def _turn(request: Request, body: ResponsesRequest, response_id: str) -> TurnRequest:
    namespace = namespace_of(request, body.user)
    session: str | None = None
    stored = False
    if body.previous_response_id:
        try:
            previous = await asyncio.to_thread(
                _store(request).get, body.previous_response_id, owner=owner_of(namespace)
            )
        except StoreError:
            raise ApiError(
                404,
                f"previous response {body.previous_response_id!r} not found (was it stored?)",
                param="previous_response_id",
            ) from None
        session, stored = previous.session_id, True
    elif body.store:
        session = f"responses/{response_id}"  # a new conversation, one session
    return TurnRequest(
        model=body.model,
        messages=body.engine_messages(),
        params=_params(request, body),
        tool_use=body.tool_use(),
        reasoning=body.reasoning_options(),
        keep_alive=body.keep_alive,
        session=session if body.store or stored else None,
        namespace=namespace,
        history_stored=stored,
    )


async def _save(
    request: Request, body: ResponsesRequest, run: TurnRun, reply: dict[str, Any]
) -> None:
    if not body.store or run.session_id is None:
        return
    items = (
        body.input
        if isinstance(body.input, list)
        else [{"type": "message", "role": "user", "content": body.input}]
    )
    await asyncio.to_thread(
        _store(request).save,
        reply["id"],
        session_id=run.session_id,
        namespace=namespace_of(request, body.user),
        body=reply,
        input_items=items,
    )


@router.post("/responses", summary="Create a response (OpenAI Responses API)", response_model=None)
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    """Text, function tools, tool_choice, text.format json_schema, reasoning effort; stored
    by default, continued with previous_response_id (only the new input is evaluated)."""
    state = state_of(request)
    response_id = f"resp_{secrets.token_hex(16)}"
    turn = await _turn(request, body, response_id)
    opened = await OpenedRun.open(request, state.service.chat(turn))
    if opened is None:
        return client_gone()
    headers = run_headers(opened.run)
    ids = {"message": f"msg_{secrets.token_hex(12)}", "reasoning": f"rs_{secrets.token_hex(12)}"}
    if body.stream:
        events = _stream(request, body, opened, response_id, ids)
        return RunStream(events, opened=opened, media_type="text/event-stream", headers=headers)
    try:
        finished = await wait_or_disconnect(request, opened.finish())
    finally:
        await opened.close()
    if finished is None:
        return client_gone()
    reply = _response(
        response_id,
        body,
        status=_status(finished),
        output=_output(finished, ids),
        usage=_usage(finished, opened.run),
    )
    await _save(request, body, opened.run, reply)
    return JSONResponse(reply, headers=headers)


async def _stream(
    request: Request,
    body: ResponsesRequest,
    opened: OpenedRun,
    response_id: str,
    ids: dict[str, str],
) -> AsyncGenerator[str, None]:
    sequence = 0

    def event(kind: str, **payload: Any) -> str:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **payload}
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    started = _response(response_id, body, status="in_progress", output=[], usage=None)
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    index = -1  # the output item being written
    open_kind: str | None = None
    text: list[str] = []
    reasoning: list[str] = []

    def close() -> list[str]:
        nonlocal open_kind
        out: list[str] = []
        if open_kind == "message":
            joined = "".join(text)
            part = {"type": "output_text", "text": joined, "annotations": []}
            out.append(
                event(
                    "response.output_text.done",
                    item_id=ids["message"],
                    output_index=index,
                    content_index=0,
                    text=joined,
                )
            )
            out.append(
                event(
                    "response.content_part.done",
                    item_id=ids["message"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
            out.append(
                event(
                    "response.output_item.done",
                    output_index=index,
                    item=_message_item(ids["message"], joined, "completed"),
                )
            )
        elif open_kind == "reasoning":
            out.append(
                event(
                    "response.output_item.done",
                    output_index=index,
                    item=_reasoning_item(ids["reasoning"], "".join(reasoning)),
                )
            )
        open_kind = None
        return out

    try:
        async for item in opened.events():
            if isinstance(item, ReasoningDelta):
                if open_kind != "reasoning":
                    for piece in close():
                        yield piece
                    index += 1
                    open_kind = "reasoning"
                    yield event(
                        "response.output_item.added",
                        output_index=index,
                        item=_reasoning_item(ids["reasoning"], ""),
                    )
                reasoning.append(item.text)
                yield event(
                    "response.reasoning_text.delta",
                    item_id=ids["reasoning"],
                    output_index=index,
                    content_index=0,
                    delta=item.text,
                )
            elif isinstance(item, TextDelta):
                if open_kind != "message":
                    for piece in close():
                        yield piece
                    index += 1
                    open_kind = "message"
                    yield event(
                        "response.output_item.added",
                        output_index=index,
                        item=_message_item(ids["message"], "", "in_progress") | {"content": []},
                    )
                    yield event(
                        "response.content_part.added",
                        item_id=ids["message"],
                        output_index=index,
                        content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []},
                    )
                text.append(item.text)
                yield event(
                    "response.output_text.delta",
                    item_id=ids["message"],
                    output_index=index,
                    content_index=0,
                    delta=item.text,
                )
            elif isinstance(item, ToolCallStarted):
                for piece in close():
                    yield piece
                index += 1
                yield event(
                    "response.output_item.added",
                    output_index=index,
                    item=_call_item(f"fc_{item.id}", item.id, item.name, "", "in_progress"),
                )
            elif isinstance(item, ToolCallDelta):
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=_current_call(opened),
                    output_index=index,
                    delta=item.arguments,
                )
            elif isinstance(item, ToolCallEnded):
                call = item.call
                yield event(
                    "response.function_call_arguments.done",
                    item_id=f"fc_{call.id}",
                    output_index=index,
                    arguments=call.arguments,
                )
                yield event(
                    "response.output_item.done",
                    output_index=index,
                    item=_call_item(
                        f"fc_{call.id}", call.id, call.name, call.arguments, "completed"
                    ),
                )
    except Exception as exc:  # the stream has begun: the failure is its last event
        await opened.close()
        failed = _response(response_id, body, status="failed", output=[], usage=None)
        failed["error"] = {"code": "server_error", "message": as_api_error(exc).message}
        yield event("response.failed", response=failed)
        return
    for piece in close():
        yield piece
    finished = opened.run.finished
    assert finished is not None
    await opened.close()
    reply = _response(
        response_id,
        body,
        status=_status(finished),
        output=_output(finished, ids),
        usage=_usage(finished, opened.run),
    )
    await _save(request, body, opened.run, reply)
    kind = "response.completed" if reply["status"] == "completed" else "response.incomplete"
    yield event(kind, response=reply)


def _current_call(opened: OpenedRun) -> str:
    """The item id of the call whose arguments are streaming (its id was given at start)."""
    started = opened.run.parser.open_call_id
    return f"fc_{started}" if started else ""


@router.get("/responses/{response_id}", summary="Retrieve a stored response")
async def retrieve_response(response_id: str, request: Request) -> dict[str, Any]:
    record = await _find(request, response_id)
    return record.body


@router.delete("/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    await _find(request, response_id)
    owner = owner_of(namespace_of(request))
    await asyncio.to_thread(_store(request).delete, response_id, owner=owner)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/responses/{response_id}/input_items", summary="The input items of a response")
async def input_items(response_id: str, request: Request) -> dict[str, Any]:
    record = await _find(request, response_id)
    data = [
        {"id": item.get("id") or f"item_{index}", **item}
        for index, item in enumerate(record.input_items)
    ]
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}


async def _find(request: Request, response_id: str) -> ResponseRecord:
    owner = owner_of(namespace_of(request))
    try:
        return await asyncio.to_thread(_store(request).get, response_id, owner=owner)
    except StoreError:
        raise ApiError(404, f"no response {response_id!r}", param="response_id") from None
