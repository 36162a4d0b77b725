"""The Ollama API under /api, as Ollama answers it, so its clients and tools work unchanged.

Generation streams NDJSON by default (one JSON object per line, the last with `done: true`
and the timings in nanoseconds); `stream: false` answers with one object. An empty prompt or
message list only loads the model (or, with `keep_alive: 0`, unloads it). Errors are
`{"error": "..."}` with the status Ollama uses; once a stream has started, an error is its
last line instead. Bodies are read as JSON whatever their Content-Type, since Ollama's own
examples use `curl -d` (which sends a form content type).

The model catalogue (`/api/tags`, `/api/ps`, `/api/show`) is in catalogue_routes.py, model
management (`/api/pull`, `/api/delete`, `/api/copy`) in pull_routes.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from hoshikage import __version__
from hoshikage.api.deps import (
    SESSION_HEADER,
    AppState,
    namespace_of,
    require_admin,
    run_headers,
    state_of,
)
from hoshikage.api.errors import ApiError, as_api_error
from hoshikage.api.ollama_schemas import (
    OLLAMA_COMPATIBLE_VERSION,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    Format,
    GenerateRequest,
    GenerateResponse,
    GenerationRequest,
    Message,
    Options,
    VersionResponse,
)
from hoshikage.api.ollama_wire import (
    ERRORS,
    NDJSON,
    documented,
    line,
    ns,
    parse,
    resolve,
    timestamp,
)
from hoshikage.api.service import CompletionJob, TurnRun
from hoshikage.api.streaming import OpenedRun, RunStream, client_gone, wait_or_disconnect
from hoshikage.api.tool_schemas import tool_use
from hoshikage.config import Settings
from hoshikage.engine import (
    ChatMessage,
    ContextOverflowError,
    EmbeddingResult,
    SamplingParams,
    ToolCall,
)
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.engine.types import Candidate, TokenLogprob
from hoshikage.models.manager import ModelSpec
from hoshikage.runtime import sampling_defaults
from hoshikage.turns.vocabulary import (
    ReasoningDelta,
    ReasoningOptions,
    TextDelta,
    ToolCallEnded,
    TurnEvent,
    TurnFinished,
    TurnRequest,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["Ollama API"])


# --- small helpers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Clock:
    """When the request arrived, on both clocks (durations, and loaded_at comparisons)."""

    perf: float = dataclasses.field(default_factory=time.perf_counter)
    wall: float = dataclasses.field(default_factory=time.time)

    def elapsed(self) -> float:
        return time.perf_counter() - self.perf


def _load_seconds(state: AppState, spec: ModelSpec, clock: _Clock) -> float:
    """How long this request waited for its model to load (0 when it was loaded already)."""
    for status in state.manager.status():
        if status.name == spec.name and status.loaded_at >= clock.wall:
            return status.loaded_at - clock.wall
    return 0.0


# --- sampling --------------------------------------------------------------------------------
def _grammar(fmt: Format) -> str | None:
    if fmt == "json":
        return JSON_OBJECT_GBNF
    if isinstance(fmt, dict):
        return json_schema_grammar(fmt)  # EngineError (a 400) if it cannot be converted
    return None


def _sampling(body: GenerationRequest, settings: Settings) -> SamplingParams:
    params = sampling_defaults(settings)
    options = body.options
    changes: dict[str, Any] = {"grammar": _grammar(body.format)}
    if body.logprobs:
        changes["logprobs"] = body.top_logprobs or 0
    if options is not None:
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
            "repeat_last_n",  # -1, the whole context, is the engine's to resolve
        ):
            value = getattr(options, name)
            if value is not None:
                changes[name] = value
        if options.seed is not None:
            changes["seed"] = options.seed if options.seed >= 0 else None
        if options.num_predict is not None:
            # -1 (no limit) and -2 (fill the context) both run until the window is full.
            changes["max_tokens"] = options.num_predict if options.num_predict >= 0 else None
        if options.stop is not None:
            changes["stop"] = tuple(options.stop)
    return dataclasses.replace(params, **changes)


def _note_num_ctx(options: Options | None, run: TurnRun) -> None:
    if options is not None and options.num_ctx is not None and options.num_ctx != run.n_ctx:
        log.info(
            "num_ctx %d ignored: %s is loaded with a %d-token context (the n_ctx setting)",
            options.num_ctx,
            run.model,
            run.n_ctx,
        )


def _reasoning(body: GenerationRequest) -> ReasoningOptions:
    """Ollama's `think`: true or a level turns thinking on, false off, absent the default."""
    think = None if body.think is None else body.think is not False
    # As Ollama: asking a model that cannot think to think is an error.
    return ReasoningOptions(think=think, required=bool(think))


# --- generation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """Where the text goes: chat answers carry a message, generate answers a response."""

    chat: bool

    def piece(self, event: TurnEvent) -> dict[str, Any] | None:
        """A streamed line's content for one event; None for events that show nothing."""
        if isinstance(event, TextDelta):
            piece = self.text(event.text)
            if event.logprobs:
                piece["logprobs"] = [_logprob(entry) for entry in event.logprobs]
            return piece
        if isinstance(event, ReasoningDelta):
            return self.text("", thinking=event.text)
        if isinstance(event, ToolCallEnded) and self.chat:
            # Ollama sends each call whole, its arguments an object, when it is complete.
            return self.text("", calls=(event.call,))
        return None

    def text(
        self, text: str, *, thinking: str = "", calls: Sequence[ToolCall] = ()
    ) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = [
                    {"function": {"name": call.name, "arguments": call.arguments_object()}}
                    for call in calls
                ]
            return {"message": message}
        return {"response": text, **({"thinking": thinking} if thinking else {})}


def _logprob(entry: TokenLogprob) -> dict[str, Any]:
    """Ollama's shape: the token, its logprob and bytes, and its most likely alternatives."""

    def candidate(c: Candidate) -> dict[str, Any]:
        return {"token": c.text, "logprob": c.logprob, "bytes": list(c.bytes)}

    return {**candidate(entry.chosen), "top_logprobs": [candidate(c) for c in entry.top]}


def _final(
    model: str,
    shape: _Shape,
    finished: TurnFinished,
    run: TurnRun,
    clock: _Clock,
    *,
    whole: bool,
) -> dict[str, Any]:
    """The last line (or the whole answer, with `whole`)."""
    timings = finished.timings
    generating = timings.total_s - timings.queued_s - timings.prompt_eval_s
    content = (
        shape.text(finished.text, thinking=finished.reasoning, calls=finished.tool_calls)
        if whole
        else shape.text("")
    )
    payload: dict[str, Any] = {
        "model": model,
        "created_at": timestamp(),
        **content,
        "done": True,
        # Ollama says "stop" for an answer that called tools too.
        "done_reason": "stop" if finished.finish_reason == "tool_calls" else finished.finish_reason,
        "total_duration": ns(clock.elapsed()),
        "load_duration": ns(finished.load_s),
        "prompt_eval_count": finished.usage.prompt_tokens,
        "prompt_eval_duration": ns(timings.prompt_eval_s),
        "eval_count": finished.usage.completion_tokens,
        "eval_duration": ns(generating),
    }
    if whole and finished.logprobs:
        payload["logprobs"] = [_logprob(entry) for entry in finished.logprobs]
    if finished.dropped_messages:
        payload["dropped_messages"] = finished.dropped_messages
    if run.session_id:
        payload["session_id"] = run.session_id
    payload.update(run.context_fields())
    return payload


async def _answer(
    request: Request,
    context: (
        contextlib.AbstractAsyncContextManager[TurnRun]
        | contextlib.AbstractAsyncContextManager[list[TurnRun]]
    ),
    *,
    body: GenerationRequest,
    shape: _Shape,
    clock: _Clock,
) -> Response:
    """Start the generation, then stream it or wait for it, in Ollama's shape."""
    # Opened (first event read) before answering: an unknown model, a full queue or a prompt
    # too long is an HTTP error rather than a line in a 200 stream.
    opened = await OpenedRun.open(request, context)
    if opened is None:
        return client_gone()
    run = opened.run
    _note_num_ctx(body.options, run)
    headers = run_headers(run)
    if body.streaming:
        lines = _stream(opened, body.model, shape, clock)
        return RunStream(lines, opened=opened, media_type=NDJSON, headers=headers)
    try:
        finished = await wait_or_disconnect(request, opened.finish())
    finally:
        await opened.close()
    if finished is None:
        return client_gone()
    return JSONResponse(
        _final(body.model, shape, finished, run, clock, whole=True), headers=headers
    )


async def _stream(
    opened: OpenedRun, model: str, shape: _Shape, clock: _Clock
) -> AsyncGenerator[str, None]:
    try:
        async for event in opened.events():
            piece = shape.piece(event)
            if piece is not None:
                yield line({"model": model, "created_at": timestamp(), **piece, "done": False})
    except Exception as exc:  # the headers are sent: an error can only be a line now
        await opened.close()
        error = as_api_error(exc)
        log.warning("%s: generation failed: %s", model, error.message)
        yield line({"error": error.message})
        return
    finished = opened.run.finished
    assert finished is not None
    # Closed before the last line: a client that sends its next message as soon as it reads
    # done must find this turn in its session already.
    await opened.close()
    yield line(_final(model, shape, finished, opened.run, clock, whole=False))


def _engine_messages(messages: Sequence[Message]) -> list[ChatMessage]:
    """Ollama's messages in the neutral shape: calls get ids where the client sent none
    (Ollama pairs results with calls by tool name and order, not by id)."""
    converted = []
    for position, message in enumerate(messages):
        calls = tuple(
            ToolCall(
                call.id or f"call_{position}_{index}",
                call.function.name,
                json.dumps(call.function.arguments, ensure_ascii=False),
            )
            for index, call in enumerate(message.tool_calls or ())
        )
        converted.append(
            ChatMessage(
                message.role,
                message.content or "",
                tool_calls=calls,
                tool_call_id=message.tool_call_id if message.role == "tool" else None,
                name=message.tool_name if message.role == "tool" else None,
                reasoning=message.thinking if message.role == "assistant" else None,
            )
        )
    return converted


async def _load_or_unload(
    request: Request, body: GenerationRequest, spec: ModelSpec, shape: _Shape
) -> Response:
    state = state_of(request)
    """Ollama's empty request: load the model and keep it, or with keep_alive 0 unload it."""
    if body.keep_alive == 0:
        require_admin(request, "unloading a model")
        await state.manager.unload(body.model)
        reason = "unload"
    else:
        if spec.embedding:
            raise ApiError(400, f"model {body.model!r} is an embedding model; it cannot generate")
        await state.manager.load(body.model, keep_alive=body.keep_alive)
        reason = "load"
    return JSONResponse(
        {
            "model": body.model,
            "created_at": timestamp(),
            **shape.text(""),
            "done": True,
            "done_reason": reason,
        }
    )


_GENERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "description": "NDJSON lines (the default), or one JSON object with stream: false",
        "content": {NDJSON: {}},
    },
}


@router.post(
    "/api/chat",
    summary="Chat with a model",
    response_model=ChatResponse,
    responses=_GENERATION_RESPONSES,
    openapi_extra=documented(ChatRequest),
)
async def chat(request: Request) -> Response:
    clock = _Clock()
    state = state_of(request)
    body = await parse(request, ChatRequest)
    messages = body.messages or []
    if any(message.images for message in messages):
        raise ApiError(400, f"{body.model!r} does not support images (text models only)")
    spec = resolve(state, body.model)
    shape = _Shape(chat=True)
    if not messages:
        return await _load_or_unload(request, body, spec, shape)
    turn = TurnRequest(
        model=body.model,
        messages=_engine_messages(messages),
        params=_sampling(body, state.settings),
        tool_use=tool_use(body.tools, body.tool_choice, body.parallel_tool_calls),
        reasoning=_reasoning(body),
        keep_alive=body.keep_alive,
        session=request.headers.get(SESSION_HEADER) or body.session_id,
        namespace=namespace_of(request),
        memory=body.memory,
    )
    return await _answer(request, state.service.chat(turn), body=body, shape=shape, clock=clock)


@router.post(
    "/api/generate",
    summary="Generate a completion",
    response_model=GenerateResponse,
    responses=_GENERATION_RESPONSES,
    openapi_extra=documented(GenerateRequest),
)
async def generate(request: Request) -> Response:
    clock = _Clock()
    state = state_of(request)
    body = await parse(request, GenerateRequest)
    if body.images:
        raise ApiError(400, f"{body.model!r} does not support images (text models only)")
    if body.suffix:
        raise ApiError(400, f"{body.model!r} does not support insert (suffix)")
    if body.template:
        raise ApiError(
            400,
            "custom templates are not supported: the model's own chat template is used, or "
            "none with raw: true",
        )
    if body.context:
        log.warning("/api/generate: 'context' is ignored; send the history to /api/chat instead")
    spec = resolve(state, body.model)
    shape = _Shape(chat=False)
    if not body.prompt:
        return await _load_or_unload(request, body, spec, shape)
    params = _sampling(body, state.settings)
    session = request.headers.get(SESSION_HEADER) or body.session_id
    opened: (
        contextlib.AbstractAsyncContextManager[TurnRun]
        | contextlib.AbstractAsyncContextManager[list[TurnRun]]
    )
    if body.raw:
        if session:
            raise ApiError(400, "a session needs the chat template: leave out raw: true")
        opened = state.service.complete(
            CompletionJob(
                model=body.model, prompt=body.prompt, params=params, keep_alive=body.keep_alive
            )
        )
    else:
        messages = [ChatMessage("system", body.system)] if body.system else []
        messages.append(ChatMessage("user", body.prompt))
        turn = TurnRequest(
            model=body.model,
            messages=messages,
            params=params,
            reasoning=_reasoning(body),
            keep_alive=body.keep_alive,
            session=session,
            namespace=namespace_of(request),
            memory=body.memory,
        )
        opened = state.service.chat(turn)
    return await _answer(request, opened, body=body, shape=shape, clock=clock)


# --- embeddings --------------------------------------------------------------------------------
async def _embed(
    state: AppState,
    model: str,
    texts: Sequence[str],
    *,
    keep_alive: float | None,
    truncate: bool,
) -> EmbeddingResult:
    try:
        return await state.service.embed(model, texts, keep_alive=keep_alive, truncate=truncate)
    except ContextOverflowError as exc:  # only without truncate (Ollama's default is to cut)
        raise ApiError(
            400,
            f"the input length exceeds the context length ({exc.n_prompt_tokens} tokens, "
            f"the model takes {exc.n_ctx}); send truncate: true to cut it",
        ) from None


def _shorten(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """Keep the first `dimensions` components, normalised again (Matryoshka-style)."""
    if dimensions is None:
        return vectors
    shortened = []
    for vector in vectors:
        if dimensions > len(vector):
            raise ApiError(400, f"dimensions {dimensions} is more than the model's {len(vector)}")
        head = vector[:dimensions]
        norm = math.sqrt(sum(x * x for x in head)) or 1.0
        shortened.append([x / norm for x in head])
    return shortened


def _require_embedding(spec: ModelSpec, name: str) -> None:
    if not spec.embedding:
        raise ApiError(400, f"model {name!r} is a text generation model; it does not embed")


@router.post(
    "/api/embed",
    summary="Embed texts",
    response_model=EmbedResponse,
    responses=ERRORS,
    openapi_extra=documented(EmbedRequest),
)
async def embed(request: Request) -> JSONResponse:
    clock = _Clock()
    state = state_of(request)
    body = await parse(request, EmbedRequest)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    spec = resolve(state, body.model)
    _require_embedding(spec, body.model)
    if not any(texts) and len(texts) <= 1:  # "" or []: Ollama loads the model and stops
        await state.manager.load(body.model, keep_alive=body.keep_alive)
        return JSONResponse(
            {
                "model": body.model,
                "embeddings": [],
                "total_duration": ns(clock.elapsed()),
                "load_duration": ns(_load_seconds(state, spec, clock)),
                "prompt_eval_count": 0,
            }
        )
    result = await _embed(
        state, body.model, texts, keep_alive=body.keep_alive, truncate=body.truncate is not False
    )
    state.metrics.observe_embedding(spec.name, result.prompt_tokens)
    return JSONResponse(
        {
            "model": body.model,
            "embeddings": _shorten(result.vectors, body.dimensions),
            "total_duration": ns(clock.elapsed()),
            "load_duration": ns(_load_seconds(state, spec, clock)),
            "prompt_eval_count": result.prompt_tokens,
        }
    )


@router.post(
    "/api/embeddings",
    summary="Embed one text (the older API)",
    response_model=EmbeddingsResponse,
    responses=ERRORS,
    openapi_extra=documented(EmbeddingsRequest),
)
async def embeddings(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await parse(request, EmbeddingsRequest)
    spec = resolve(state, body.model)
    _require_embedding(spec, body.model)
    if not body.prompt:
        await state.manager.load(body.model, keep_alive=body.keep_alive)
        return JSONResponse({"embedding": []})
    result = await _embed(
        state, body.model, [body.prompt], keep_alive=body.keep_alive, truncate=True
    )
    state.metrics.observe_embedding(spec.name, result.prompt_tokens)
    return JSONResponse({"embedding": result.vectors[0]})


# --- server ------------------------------------------------------------------------------------
@router.get("/api/version", summary="Ollama API version", response_model=VersionResponse)
async def version() -> dict[str, str]:
    return {"version": OLLAMA_COMPATIBLE_VERSION, "hoshikage": __version__}


@router.get("/", summary="Ollama's liveness probe", response_class=PlainTextResponse)
async def root() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.head("/", summary="Ollama's liveness probe (headers only)")
async def root_head() -> Response:
    return Response(media_type="text/plain; charset=utf-8")
