"""The OpenAI-compatible API under /v1: chat completions, completions, embeddings, models.

Responses follow the `openai` package's own types. Two things go beyond OpenAI, so that
nothing happens silently: when older messages were left out to fit the context window, the
response says how many (header `X-Hoshikage-Dropped-Messages`, and `usage.dropped_messages`);
and an answer cut short by the server itself (shutdown, unload) reports finish_reason
"length" — the text is incomplete, which "stop" would hide.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import math
import secrets
import struct
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from hoshikage import __version__
from hoshikage.api.app import (
    AppState,
    namespace_of,
    run_headers,
    served_models,
    state_of,
)
from hoshikage.api.bounds import BIAS_LIMIT
from hoshikage.api.errors import ApiError, as_api_error
from hoshikage.api.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
    SamplingFields,
)
from hoshikage.api.service import ChatJob, CompletionJob, Run
from hoshikage.api.streaming import OpenedRun, RunStream, client_gone, wait_or_disconnect
from hoshikage.config import Settings
from hoshikage.engine import EngineError, FinishEvent, SamplingParams, TokenEvent
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.runtime import sampling_defaults

log = logging.getLogger("hoshikage.api.openai")

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

FINGERPRINT = f"hoshikage-{__version__}"
SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# llama.cpp reads the seed as uint32 and takes 0xFFFFFFFF to mean "random".
_SEED_RANGE = 2**32 - 1

_FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "length"}

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with stream=true server-sent events ending `data: [DONE]`.",
        "content": {"text/event-stream": {}},
    }
}


# --- request to engine ----------------------------------------------------------------------
def sampling_params(
    settings: Settings, body: SamplingFields, answer_limit: int | None
) -> SamplingParams:
    """The server's defaults, overridden by what the request sets."""
    base = sampling_defaults(settings)
    stops = body.stop_strings()
    return dataclasses.replace(
        base,
        temperature=_given(body.temperature, base.temperature),
        top_p=_given(body.top_p, base.top_p),
        top_k=_given(body.top_k, base.top_k),
        min_p=_given(body.min_p, base.min_p),
        repeat_penalty=_given(body.repeat_penalty, base.repeat_penalty),
        repeat_last_n=_given(body.repeat_last_n, base.repeat_last_n),
        presence_penalty=_given(body.presence_penalty, base.presence_penalty),
        frequency_penalty=_given(body.frequency_penalty, base.frequency_penalty),
        seed=base.seed if body.seed is None else body.seed % _SEED_RANGE,
        max_tokens=_given(answer_limit, base.max_tokens),
        stop=base.stop if stops is None else tuple(stops),
        logit_bias=tuple(
            # OpenAI: -100 "should result in a ban"; a bias of -100 alone may not ban.
            (int(token), -math.inf if bias <= -BIAS_LIMIT else bias)
            for token, bias in (body.logit_bias or {}).items()
        ),
        ignore_eos=body.ignore_eos,
        grammar=_grammar(body.response_format),
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _grammar(response_format: ResponseFormat | None) -> str | None:
    if response_format is None or response_format.type == "text":
        return None
    spec = response_format.json_schema
    if response_format.type == "json_object" or spec is None or spec.schema_ is None:
        return JSON_OBJECT_GBNF
    try:
        return json_schema_grammar(spec.schema_)
    except EngineError as exc:
        raise ApiError(400, str(exc), param="response_format.json_schema.schema") from None


# --- response pieces --------------------------------------------------------------------------
def _usage(finish: FinishEvent, run: Run, *, chat: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": finish.usage.prompt_tokens,
        "completion_tokens": finish.usage.completion_tokens,
        "total_tokens": finish.usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": finish.usage.cached_prompt_tokens},
    }
    if chat:
        usage["dropped_messages"] = run.dropped_messages
    return usage


def _sse(payload: dict[str, Any] | str) -> str:
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n"


def _stream_error(exc: Exception) -> str:
    """An error after the stream began: the openai client raises it as an APIError."""
    error = as_api_error(exc)
    return _sse(
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
class _Reply:
    """What every chunk of one answer shares."""

    id: str
    model: str
    created: int
    object: str
    include_usage: bool

    @classmethod
    def new(cls, prefix: str, model: str, object_: str, include_usage: bool = False) -> _Reply:
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


async def _finished_stream(
    state: AppState,
    opened: OpenedRun,
    reply: _Reply,
    chunk: Callable[[str | None, str | None], dict[str, Any]],
    *,
    chat: bool,
) -> AsyncGenerator[str, None]:
    """The stream's body after its opening chunk: text chunks, the finish, usage, [DONE].

    `chunk(text, finish_reason)` renders one choice.
    """
    try:
        async for event in opened.events():
            if isinstance(event, TokenEvent) and event.text:
                yield _sse(reply.envelope([chunk(event.text, None)]))
    except Exception as exc:  # the stream has begun: the error becomes its last event
        await opened.close()
        yield _stream_error(exc)
        return
    finish = opened.run.generation.finish
    assert finish is not None
    # Close (and so store a session's turn) before the client hears the end: a client that
    # sends its next message right after [DONE] must find this turn in the history.
    await opened.close()
    state.metrics.observe_finish(finish, opened.run.model)
    yield _sse(reply.envelope([chunk(None, _FINISH_REASONS[finish.finish_reason])]))
    if reply.include_usage:
        usage = _usage(finish, opened.run, chat=chat)
        yield _sse({**reply.envelope([]), "usage": usage})
    yield _sse("[DONE]")


async def _finish_or_leave(request: Request, opened: OpenedRun) -> FinishEvent | None:
    try:
        return await wait_or_disconnect(request, opened.finish())
    finally:
        await opened.close()


# --- routes -----------------------------------------------------------------------------------
@router.post(
    "/chat/completions",
    summary="Create a chat completion",
    response_model=None,
    responses=_STREAM_DOC,
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    x_session_id: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="Store the turn in this session (id or name), continuing its history.",
        ),
    ] = None,
) -> Response:
    """Answer a conversation, streamed (SSE) or whole.

    Supports stop, max_tokens / max_completion_tokens, seed, temperature, top_p, penalties,
    logit_bias, response_format (json_object, json_schema; grammar-enforced) and llama.cpp's
    top_k, min_p, repeat_penalty. With `session_id` (or `X-Session-Id`), the turn is stored
    in that session, and a request carrying only its new message continues the history.
    """
    state = state_of(request)
    if body.user:
        log.debug("chat request from user %r", body.user[:64])
    job = ChatJob(
        model=body.model,
        messages=body.engine_messages(),
        params=sampling_params(state.settings, body, body.answer_limit),
        keep_alive=body.keep_alive,
        session=body.session_id or x_session_id,
        namespace=namespace_of(request, body.user),
        memory=body.memory,
    )
    opened = await OpenedRun.open(request, state.service.chat(job))
    if opened is None:
        return client_gone()
    headers = run_headers(opened.run)
    if body.stream:
        reply = _Reply.new("chatcmpl", body.model, "chat.completion.chunk", body.include_usage)

        def chunk(text: str | None, finish_reason: str | None) -> dict[str, Any]:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        async def stream() -> AsyncGenerator[str, None]:
            opening = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            first = [{**opening, "logprobs": None, "finish_reason": None}]
            yield _sse(reply.envelope(first, **opened.run.context_fields()))
            async for piece in _finished_stream(state, opened, reply, chunk, chat=True):
                yield piece

        return RunStream(
            stream(), opened=opened, media_type=SSE_MEDIA_TYPE, headers=headers | SSE_HEADERS
        )
    finish = await _finish_or_leave(request, opened)
    if finish is None:
        return client_gone()
    state.metrics.observe_finish(finish, opened.run.model)
    reply = _Reply.new("chatcmpl", body.model, "chat.completion")
    message = {"role": "assistant", "content": opened.run.generation.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _FINISH_REASONS[finish.finish_reason],
    }
    content = reply.envelope(
        [choice], usage=_usage(finish, opened.run, chat=True), **opened.run.context_fields()
    )
    return JSONResponse(content, headers=headers)


@router.post(
    "/completions",
    summary="Create a text completion",
    response_model=None,
    responses=_STREAM_DOC,
)
async def completions(body: CompletionRequest, request: Request) -> Response:
    """Continue a prompt (no chat template), streamed (SSE) or whole; `echo` supported."""
    state = state_of(request)
    prompt = body.prompt_text
    job = CompletionJob(
        model=body.model,
        prompt=prompt,
        params=sampling_params(state.settings, body, body.answer_limit),
        keep_alive=body.keep_alive,
    )
    opened = await OpenedRun.open(request, state.service.complete(job))
    if opened is None:
        return client_gone()
    echo = prompt if body.echo else ""
    if body.stream:
        reply = _Reply.new("cmpl", body.model, "text_completion", body.include_usage)

        def chunk(text: str | None, finish_reason: str | None) -> dict[str, Any]:
            return {
                "index": 0,
                "text": text or "",
                "logprobs": None,
                "finish_reason": finish_reason,
            }

        async def stream() -> AsyncGenerator[str, None]:
            if echo:
                yield _sse(reply.envelope([chunk(echo, None)]))
            async for piece in _finished_stream(state, opened, reply, chunk, chat=False):
                yield piece

        return RunStream(stream(), opened=opened, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    finish = await _finish_or_leave(request, opened)
    if finish is None:
        return client_gone()
    state.metrics.observe_finish(finish, opened.run.model)
    reply = _Reply.new("cmpl", body.model, "text_completion")
    choice = {
        "index": 0,
        "text": echo + opened.run.generation.text,
        "logprobs": None,
        "finish_reason": _FINISH_REASONS[finish.finish_reason],
    }
    return JSONResponse(reply.envelope([choice], usage=_usage(finish, opened.run, chat=False)))


@router.post("/embeddings", summary="Create embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Pooled, L2-normalised vectors from an embedding model, as floats or base64 float32."""
    state = state_of(request)
    result = await wait_or_disconnect(
        request, state.service.embed(body.model, body.texts, keep_alive=body.keep_alive)
    )
    if result is None:
        return client_gone()
    dimension = len(result.vectors[0]) if result.vectors else 0
    if body.dimensions is not None and body.dimensions != dimension:
        raise ApiError(
            400,
            f"dimensions={body.dimensions} is not supported: {body.model} gives "
            f"{dimension}-dimensional vectors and they are not shortened here",
            param="dimensions",
        )
    state.metrics.observe_embedding(body.model, result.prompt_tokens)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _base64_floats(vector) if body.encoding_format == "base64" else vector,
        }
        for index, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": usage})


def _base64_floats(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@router.get("/models", summary="List models")
async def list_models(request: Request) -> dict[str, Any]:
    """Registered models and the models the server's settings name."""
    cards = await asyncio.to_thread(_model_cards, state_of(request))
    return {"object": "list", "data": sorted(cards.values(), key=lambda card: card["id"])}


@router.get("/models/{model_id:path}", summary="Retrieve a model")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    card = await asyncio.to_thread(_find_card, state, model_id)
    if card is None:
        raise ApiError(
            404,
            f"model {model_id!r} not found (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    return card


def _card(model_id: str, created: float) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": "hoshikage"}


def _model_cards(state: AppState) -> dict[str, dict[str, Any]]:
    cards = {record.name: _card(record.name, record.added_at) for record in state.registry.list()}
    for name, path in served_models(state.settings).items():
        cards.setdefault(name, _card(name, _mtime(path)))
    return cards


def _find_card(state: AppState, model_id: str) -> dict[str, Any] | None:
    record = state.registry.find(model_id)
    if record is not None:
        return _card(record.name, record.added_at)
    served = served_models(state.settings)
    name = model_id if model_id in served else model_id.removesuffix(":latest")
    return _card(name, _mtime(served[name])) if name in served else None


def _mtime(path: Path) -> float:
    try:
        return float(path.stat().st_mtime)
    except OSError:
        return 0.0
