"""The Ollama API under /api, as Ollama answers it, so its clients and tools work unchanged.

Generation streams NDJSON by default (one JSON object per line, the last with `done: true`
and the timings in nanoseconds); `stream: false` answers with one object. An empty prompt or
message list only loads the model (or, with `keep_alive: 0`, unloads it). Errors are
`{"error": "..."}` with the status Ollama uses; once a stream has started, an error is its
last line instead. Bodies are read as JSON whatever their Content-Type, since Ollama's own
examples use `curl -d` (which sends a form content type).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from hoshikage import __version__
from hoshikage.api.app import (
    SESSION_HEADER,
    AppState,
    model_resolver,
    namespace_of,
    require_admin,
    run_headers,
    served_models,
    state_of,
)
from hoshikage.api.bounds import InvalidTextError, check_request_text
from hoshikage.api.errors import ApiError
from hoshikage.api.ollama_schemas import (
    IGNORED_OPTIONS,
    OLLAMA_COMPATIBLE_VERSION,
    ChatRequest,
    ChatResponse,
    CopyRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    Format,
    GenerateRequest,
    GenerateResponse,
    GenerationRequest,
    OllamaBody,
    Options,
    ProgressResponse,
    PsResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    StatusResponse,
    TagsResponse,
    VersionResponse,
)
from hoshikage.api.service import ChatJob, CompletionJob, Run
from hoshikage.api.streaming import OpenedRun, RunStream, client_gone, wait_or_disconnect
from hoshikage.config import Settings
from hoshikage.engine import (
    ChatMessage,
    ContextOverflowError,
    EmbeddingResult,
    EngineError,
    FinishEvent,
    SamplingParams,
    TokenEvent,
)
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.engine.templates import BUILTIN_TEMPLATES, FALLBACK_TEMPLATE_NAME
from hoshikage.models import hub
from hoshikage.models.gguf_info import GgufError, parameter_label, read_gguf_info
from hoshikage.models.manager import ModelSpec, UnknownModelError
from hoshikage.models.registry import (
    ModelRecord,
    RegistryError,
    default_models_dir,
    normalize_name,
)
from hoshikage.runtime import sampling_defaults

log = logging.getLogger(__name__)

router = APIRouter(tags=["Ollama API"])

NDJSON = "application/x-ndjson"
# Ollama's `ps` shows a model kept loaded forever with an expiry centuries ahead; its CLI
# prints "Forever" for anything more than 20 years away.
_FOREVER = timedelta(days=365 * 100)

B = TypeVar("B", bound=BaseModel)
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
}
_UNSUPPORTED: dict[int | str, dict[str, Any]] = {
    501: {"model": ErrorResponse, "description": "Not supported"}
}


# --- request bodies ----------------------------------------------------------------------------
def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body for `model` (bodies are parsed by hand, see the module doc)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


async def _parse(request: Request, model: type[B]) -> B:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON in the request body: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid JSON in the request body: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        check_request_text(data)
    except InvalidTextError as exc:
        raise ApiError(400, str(exc)) from None
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, _describe(exc)) from None
    if isinstance(body, OllamaBody):
        _note_unknown(request.url.path, body)
    return body


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{location}: {message}" if location else message)
    return "; ".join(problems)


def _note_unknown(path: str, body: OllamaBody) -> None:
    unknown = [name for name in body.unknown_fields if name != "name"]
    if unknown:
        log.warning("%s: ignoring unknown fields %s", path, ", ".join(unknown))
    options = getattr(body, "options", None)
    if isinstance(options, Options):
        ignored = [name for name in options.unknown_fields if name in IGNORED_OPTIONS]
        invalid = [name for name in options.unknown_fields if name not in IGNORED_OPTIONS]
        if ignored:
            log.info("%s: options %s have no effect here", path, ", ".join(ignored))
        if invalid:
            log.warning("%s: ignoring unknown options %s", path, ", ".join(invalid))


# --- small helpers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Clock:
    """When the request arrived, on both clocks (durations, and loaded_at comparisons)."""

    perf: float = dataclasses.field(default_factory=time.perf_counter)
    wall: float = dataclasses.field(default_factory=time.time)

    def elapsed(self) -> float:
        return time.perf_counter() - self.perf


def _timestamp(seconds: float | None = None) -> str:
    """RFC 3339 in UTC, as Go writes time.Time into JSON; a moment past what a timestamp can
    hold (a deadline centuries away) is written as the far future Ollama shows for ever."""
    try:
        moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        moment = datetime.now(timezone.utc) + _FOREVER
    return moment.isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(round(seconds * 1e9), 0)


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"


def _tagged(name: str) -> str:
    """Ollama always shows a tag: "llama3" is listed as "llama3:latest"."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _resolve(state: AppState, name: str) -> ModelSpec:
    try:
        return model_resolver(state.settings, state.registry)(name)
    except UnknownModelError:
        # Ollama's words: clients look for them to offer a pull.
        raise ApiError(404, f'model "{name}" not found, try pulling it first') from None


def _load_seconds(state: AppState, spec: ModelSpec, clock: _Clock) -> float:
    """How long this request waited for its model to load (0 when it was loaded already)."""
    for status in state.manager.status():
        if status.name == spec.name and status.loaded_at >= clock.wall:
            return status.loaded_at - clock.wall
    return 0.0


class _PullStream(StreamingResponse):
    """Pull progress as NDJSON; the pull stops when the response ends before it does."""

    def __init__(self, lines: AsyncGenerator[str, None], stop: threading.Event) -> None:
        super().__init__(lines, media_type=NDJSON)
        self._lines = lines
        self._stop = stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stop.set()  # a no-op once the pull is over
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._lines.aclose()


# --- sampling --------------------------------------------------------------------------------
def _grammar(fmt: Format) -> str | None:
    if fmt == "json":
        return JSON_OBJECT_GBNF
    if isinstance(fmt, dict):
        return json_schema_grammar(fmt)  # EngineError (a 400) if it cannot be converted
    return None


def _sampling(settings: Settings, options: Options | None, fmt: Format) -> SamplingParams:
    params = sampling_defaults(settings)
    changes: dict[str, Any] = {"grammar": _grammar(fmt)}
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


def _note_num_ctx(options: Options | None, run: Run) -> None:
    if options is not None and options.num_ctx is not None and options.num_ctx != run.n_ctx:
        log.info(
            "num_ctx %d ignored: %s is loaded with a %d-token context (the n_ctx setting)",
            options.num_ctx,
            run.model,
            run.n_ctx,
        )


def _refuse_unsupported(body: GenerationRequest) -> None:
    if body.think not in (None, False):
        raise ApiError(400, f"{body.model!r} does not support thinking")


# --- generation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """Where the text goes: chat answers carry a message, generate answers a response."""

    chat: bool

    def text(self, text: str) -> dict[str, Any]:
        if self.chat:
            return {"message": {"role": "assistant", "content": text}}
        return {"response": text}


def _final(
    model: str, shape: _Shape, text: str, finish: FinishEvent, run: Run, clock: _Clock, load: float
) -> dict[str, Any]:
    timings = finish.timings
    generating = timings.total_s - timings.queued_s - timings.prompt_eval_s
    payload: dict[str, Any] = {
        "model": model,
        "created_at": _timestamp(),
        **shape.text(text),
        "done": True,
        "done_reason": finish.finish_reason,
        "total_duration": _ns(clock.elapsed()),
        "load_duration": _ns(load),
        "prompt_eval_count": finish.usage.prompt_tokens,
        "prompt_eval_duration": _ns(timings.prompt_eval_s),
        "eval_count": finish.usage.completion_tokens,
        "eval_duration": _ns(generating),
    }
    if finish.dropped_messages:
        payload["dropped_messages"] = finish.dropped_messages
    if run.session_id:
        payload["session_id"] = run.session_id
    payload.update(run.context_fields())
    return payload


async def _answer(
    request: Request,
    state: AppState,
    context: contextlib.AbstractAsyncContextManager[Run],
    *,
    body: GenerationRequest,
    spec: ModelSpec,
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
    load = _load_seconds(state, spec, clock)
    headers = run_headers(run)
    if body.streaming:
        lines = _stream(state, opened, spec, body.model, shape, clock, load)
        return RunStream(lines, opened=opened, media_type=NDJSON, headers=headers)
    try:
        finish = await wait_or_disconnect(request, opened.finish())
    except EngineError as exc:
        raise ApiError(500, str(exc)) from None
    finally:
        await opened.close()
    if finish is None:
        return client_gone()
    state.metrics.observe_finish(finish, spec.name)
    final = _final(body.model, shape, run.generation.text, finish, run, clock, load)
    return JSONResponse(final, headers=headers)


async def _stream(
    state: AppState,
    opened: OpenedRun,
    spec: ModelSpec,
    model: str,
    shape: _Shape,
    clock: _Clock,
    load: float,
) -> AsyncGenerator[str, None]:
    try:
        async for event in opened.events():
            if isinstance(event, TokenEvent) and event.text:  # empty: a stop string undecided
                piece = {"model": model, "created_at": _timestamp(), **shape.text(event.text)}
                yield _line({**piece, "done": False})
    except Exception as exc:  # the headers are sent: an error can only be a line now
        await opened.close()
        if isinstance(exc, EngineError):
            log.warning("%s: generation failed: %s", model, exc)
            yield _line({"error": str(exc)})
        else:
            log.error("%s: unexpected error while streaming", model, exc_info=exc)
            yield _line({"error": "internal error; see the server log"})
        return
    finish = opened.run.generation.finish
    assert finish is not None
    # Closed before the last line: a client that sends its next message as soon as it reads
    # done must find this turn in its session already.
    await opened.close()
    state.metrics.observe_finish(finish, spec.name)
    yield _line(_final(model, shape, "", finish, opened.run, clock, load))


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
            "created_at": _timestamp(),
            **shape.text(""),
            "done": True,
            "done_reason": reason,
        }
    )


_GENERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
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
    openapi_extra=_documented(ChatRequest),
)
async def chat(request: Request) -> Response:
    clock = _Clock()
    state = state_of(request)
    body = await _parse(request, ChatRequest)
    if body.tools:
        raise ApiError(400, f"{body.model!r} does not support tools")
    _refuse_unsupported(body)
    messages = body.messages or []
    if any(message.images for message in messages):
        raise ApiError(400, f"{body.model!r} does not support images (text models only)")
    if any(message.tool_calls for message in messages):
        log.info("/api/chat: tool_calls in the history are ignored (no tool support)")
    spec = _resolve(state, body.model)
    shape = _Shape(chat=True)
    if not messages:
        return await _load_or_unload(request, body, spec, shape)
    job = ChatJob(
        model=body.model,
        messages=[ChatMessage(message.role, message.content or "") for message in messages],
        params=_sampling(state.settings, body.options, body.format),
        keep_alive=body.keep_alive,
        session=request.headers.get(SESSION_HEADER) or body.session_id,
        namespace=namespace_of(request),
        memory=body.memory,
    )
    return await _answer(
        request, state, state.service.chat(job), body=body, spec=spec, shape=shape, clock=clock
    )


@router.post(
    "/api/generate",
    summary="Generate a completion",
    response_model=GenerateResponse,
    responses=_GENERATION_RESPONSES,
    openapi_extra=_documented(GenerateRequest),
)
async def generate(request: Request) -> Response:
    clock = _Clock()
    state = state_of(request)
    body = await _parse(request, GenerateRequest)
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
    _refuse_unsupported(body)
    spec = _resolve(state, body.model)
    shape = _Shape(chat=False)
    if not body.prompt:
        return await _load_or_unload(request, body, spec, shape)
    params = _sampling(state.settings, body.options, body.format)
    session = request.headers.get(SESSION_HEADER) or body.session_id
    opened: contextlib.AbstractAsyncContextManager[Run]
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
        job = ChatJob(
            model=body.model,
            messages=messages,
            params=params,
            keep_alive=body.keep_alive,
            session=session,
            namespace=namespace_of(request),
            memory=body.memory,
        )
        opened = state.service.chat(job)
    return await _answer(request, state, opened, body=body, spec=spec, shape=shape, clock=clock)


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
    responses=_ERRORS,
    openapi_extra=_documented(EmbedRequest),
)
async def embed(request: Request) -> JSONResponse:
    clock = _Clock()
    state = state_of(request)
    body = await _parse(request, EmbedRequest)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    spec = _resolve(state, body.model)
    _require_embedding(spec, body.model)
    if not any(texts) and len(texts) <= 1:  # "" or []: Ollama loads the model and stops
        await state.manager.load(body.model, keep_alive=body.keep_alive)
        return JSONResponse(
            {
                "model": body.model,
                "embeddings": [],
                "total_duration": _ns(clock.elapsed()),
                "load_duration": _ns(_load_seconds(state, spec, clock)),
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
            "total_duration": _ns(clock.elapsed()),
            "load_duration": _ns(_load_seconds(state, spec, clock)),
            "prompt_eval_count": result.prompt_tokens,
        }
    )


@router.post(
    "/api/embeddings",
    summary="Embed one text (the older API)",
    response_model=EmbeddingsResponse,
    responses=_ERRORS,
    openapi_extra=_documented(EmbeddingsRequest),
)
async def embeddings(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await _parse(request, EmbeddingsRequest)
    spec = _resolve(state, body.model)
    _require_embedding(spec, body.model)
    if not body.prompt:
        await state.manager.load(body.model, keep_alive=body.keep_alive)
        return JSONResponse({"embedding": []})
    result = await _embed(
        state, body.model, [body.prompt], keep_alive=body.keep_alive, truncate=True
    )
    state.metrics.observe_embedding(spec.name, result.prompt_tokens)
    return JSONResponse({"embedding": result.vectors[0]})


# --- models ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Facts:
    """What the listing routes say about a model, from the registry or the file's header."""

    name: str
    path: Path
    size: int
    digest: str  # hex sha256, "" when not known (a configured file nobody hashed)
    modified_at: float
    architecture: str
    parameters: int | None
    parameter_size: str
    quantization: str
    context_length: int | None
    embedding: bool
    metadata: dict[str, Any]

    @property
    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.architecture,
            "families": [self.architecture] if self.architecture else None,
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


def _facts_of_record(record: ModelRecord) -> _Facts:
    return _Facts(
        name=record.name,
        path=record.path,
        size=record.size_bytes or 0,
        digest=record.sha256 or "",
        modified_at=record.added_at,
        architecture=record.architecture or "",
        parameters=record.parameters,
        parameter_size=record.parameter_size or "",
        quantization=record.quantization or "",
        context_length=record.context_length,
        embedding=record.embedding,
        metadata=record.metadata,
    )


def _facts_of_file(name: str, path: Path, *, embedding: bool) -> _Facts:
    """A configured model (settings, not the registry): its header, read without loading."""
    info = read_gguf_info(path)  # GgufError for a file that is not a readable GGUF
    stat = path.stat()
    label = info.metadata.get("general.size_label")
    return _Facts(
        name=name,
        path=path,
        size=stat.st_size,
        digest="",
        modified_at=stat.st_mtime,
        architecture=info.architecture or "",
        parameters=info.parameters,
        parameter_size=label if isinstance(label, str) else parameter_label(info.parameters) or "",
        quantization=info.quantization or "",
        context_length=info.context_length,
        embedding=embedding,
        metadata=info.metadata,
    )


def _facts(state: AppState, spec: ModelSpec) -> _Facts:
    record = state.registry.find(spec.name)
    if record is not None:
        return _facts_of_record(record)
    return _facts_of_file(spec.name, spec.path, embedding=spec.embedding)


def _all_facts(state: AppState) -> list[_Facts]:
    facts = [_facts_of_record(record) for record in state.registry.list()]
    listed = {fact.name for fact in facts}
    for name, path in sorted(served_models(state.settings).items()):
        if state.registry.find(name) is not None or name in listed:
            continue  # a registered name wins, as it does when resolving
        try:
            facts.append(_facts_of_file(name, path, embedding=False))
        except (GgufError, OSError) as exc:
            log.warning("not listing the configured model %s: %s", name, exc)
    return facts


@router.get("/api/tags", summary="List models", response_model=TagsResponse)
async def tags(request: Request) -> JSONResponse:
    state = state_of(request)
    facts = await asyncio.to_thread(_all_facts, state)
    return JSONResponse(
        {
            "models": [
                {
                    "name": _tagged(fact.name),
                    "model": _tagged(fact.name),
                    "modified_at": _timestamp(fact.modified_at),
                    "size": fact.size,
                    "digest": fact.digest,
                    "details": fact.details,
                }
                for fact in facts
            ]
        }
    )


@router.get("/api/ps", summary="List loaded models", response_model=PsResponse)
async def ps(request: Request) -> JSONResponse:
    state = state_of(request)
    running = []
    for status in state.manager.status():
        spec = ModelSpec(name=status.name, path=Path(status.path), embedding=status.embedding)
        try:
            fact = await asyncio.to_thread(_facts, state, spec)
            digest, details = fact.digest, fact.details
        except (GgufError, OSError) as exc:
            log.warning("cannot describe the loaded model %s: %s", status.name, exc)
            digest, details = "", {"format": "gguf"}
        expires = _timestamp(
            status.expires_at
            if status.expires_at is not None
            else time.time() + _FOREVER.total_seconds()
        )
        # Estimated bytes of weights and KV cache; on a GPU backend they live in its memory
        # (a hybrid split is not measured, so it counts as system memory).
        on_gpu = status.backend not in ("cpu", "") and not status.backend.startswith("hybrid")
        running.append(
            {
                "name": _tagged(status.name),
                "model": _tagged(status.name),
                "size": status.estimated_bytes,
                "digest": digest,
                "details": details,
                "expires_at": expires,
                "size_vram": status.estimated_bytes if on_gpu else 0,
                "context_length": status.n_ctx,
            }
        )
    return JSONResponse({"models": running})


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; a header may (an unset float written as NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _template_of(settings: Settings, fact: _Facts) -> str:
    """The chat template the engine will use (the setting, the GGUF's, or the fallback)."""
    if settings.chat_template:
        return BUILTIN_TEMPLATES.get(settings.chat_template, settings.chat_template)
    own = fact.metadata.get("tokenizer.chat_template")
    return own if isinstance(own, str) and own else BUILTIN_TEMPLATES[FALLBACK_TEMPLATE_NAME]


def _parameters_of(settings: Settings, fact: _Facts) -> str:
    """Sampling defaults as Modelfile PARAMETER lines (every request may override them)."""
    if fact.embedding:
        return ""
    defaults = sampling_defaults(settings)
    values: list[tuple[str, Any]] = [
        ("num_ctx", settings.n_ctx or fact.context_length or 0),
        ("temperature", defaults.temperature),
        ("top_k", defaults.top_k),
        ("top_p", defaults.top_p),
        ("min_p", defaults.min_p),
        ("repeat_penalty", defaults.repeat_penalty),
        ("repeat_last_n", defaults.repeat_last_n),
    ]
    if defaults.max_tokens is not None:
        values.append(("num_predict", defaults.max_tokens))
    if defaults.seed is not None:
        values.append(("seed", defaults.seed))
    values.extend(("stop", json.dumps(stop)) for stop in defaults.stop)
    return "\n".join(f"{key:<30} {value}" for key, value in values)


@router.post(
    "/api/show",
    summary="Show a model's details",
    response_model=ShowResponse,
    responses=_ERRORS,
    openapi_extra=_documented(ShowRequest),
)
async def show(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await _parse(request, ShowRequest)
    spec = _resolve(state, body.model)
    try:
        fact = await asyncio.to_thread(_facts, state, spec)
    except (GgufError, OSError) as exc:
        raise ApiError(500, f"cannot read model {body.model!r}: {exc}") from None
    settings = state.settings
    template = _template_of(settings, fact)
    parameters = _parameters_of(settings, fact)
    info = {
        key: _finite(value)
        for key, value in fact.metadata.items()
        if key != "tokenizer.chat_template"  # it is the "template" field
    }
    info.setdefault("general.architecture", fact.architecture)
    if fact.parameters:
        info.setdefault("general.parameter_count", fact.parameters)
    modelfile = [
        '# Modelfile generated by "hoshikage"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {_tagged(fact.name)}",
        "",
        f"FROM {fact.path}",
    ]
    if not fact.embedding:
        modelfile.append(f'TEMPLATE """{template}"""')
    modelfile.extend(f"PARAMETER {line}" for line in parameters.splitlines())
    license_text = fact.metadata.get("general.license")
    payload: dict[str, Any] = {
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": parameters,
        "template": "" if fact.embedding else template,
        "details": fact.details,
        "model_info": info,
        "capabilities": ["embedding"] if fact.embedding else ["completion"],
        "modified_at": _timestamp(fact.modified_at),
    }
    if isinstance(license_text, str):
        payload["license"] = license_text
    return JSONResponse(payload)


# --- pull, delete, copy ------------------------------------------------------------------------
class _PullStopped(Exception):
    """Raised in the pull's thread once nobody waits for it; the partial file stays."""


def _pull_status(message: str) -> int:
    # RegistryError carries no kind; its messages name the missing thing when it is missing.
    lowered = message.lower()
    if "no repository" in lowered or " has no " in lowered:
        return 404
    if "already taken" in lowered or "split gguf" in lowered or "gated" in lowered:
        return 400
    return 502  # the hub or the network failed: not this server's fault, nor the client's


def _pull_alias(text: str, reference: hub.HubReference) -> str | None:
    """`owner/repo:quant` is registered under that name, so the same name runs it after."""
    if reference.filename is not None:
        return None  # hf://…/file.gguf: the hub names it after the file
    try:
        return normalize_name(text)
    except RegistryError:
        return None


@router.post(
    "/api/pull",
    summary="Pull a GGUF from the Hugging Face hub",
    response_model=ProgressResponse,
    responses={
        **_ERRORS,
        200: {"description": "NDJSON progress lines (the default)", "content": {NDJSON: {}}},
    },
    openapi_extra=_documented(PullRequest),
)
async def pull(request: Request) -> Response:
    state = state_of(request)
    body = await _parse(request, PullRequest)
    if body.insecure:
        log.info("/api/pull: 'insecure' has no effect (the hub is reached over HTTPS)")
    try:
        reference = hub.parse_reference(body.model)
    except RegistryError as exc:
        raise ApiError(400, str(exc)) from None
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def report(step: hub.PullProgress) -> None:  # in the pull's thread
        if stop.is_set():
            raise _PullStopped("the client went away")
        if step.status != hub.SUCCESS:  # said below, with the name it was registered under
            loop.call_soon_threadsafe(progress.put_nowait, step.to_ollama())

    # A thread of its own: a long download must not hold one of the default executor's few
    # workers, which every request needs for tokenising.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ollama-pull")
    pulling = asyncio.wrap_future(
        pool.submit(
            hub.pull,
            reference,
            state.registry,
            default_models_dir(state.settings),
            name=_pull_alias(body.model, reference),
            progress=report,
        )
    )
    pool.shutdown(wait=False)  # its thread ends with the pull

    def wake(future: asyncio.Future[ModelRecord]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned pull's error is not worth a warning
        progress.put_nowait({})  # wakes the reader at the end

    pulling.add_done_callback(wake)

    async def finished() -> dict[str, Any]:
        try:
            record = await pulling
        except (RegistryError, _PullStopped) as exc:
            return {"error": str(exc)}
        except Exception as exc:
            log.error("pull of %s failed", body.model, exc_info=exc)
            return {"error": f"pull failed: {exc}"}
        log.info("pulled %s as %s", body.model, record.name)
        return {"status": "success", "model": record.name}

    if body.stream is False:
        outcome = await wait_or_disconnect(request, finished())
        if outcome is None:
            stop.set()
            return client_gone()
        if "error" in outcome:
            raise ApiError(_pull_status(outcome["error"]), outcome["error"])
        return JSONResponse(outcome)

    async def lines() -> AsyncGenerator[str, None]:
        while not pulling.done() or not progress.empty():
            step = await progress.get()
            if step:
                yield _line(step)
        yield _line(await finished())

    return _PullStream(lines(), stop)


def _registered(state: AppState, name: str) -> ModelRecord:
    record = state.registry.find(name)
    if record is not None:
        return record
    _resolve(state, name)  # a 404 if the name is unknown altogether
    raise ApiError(
        400,
        f"model {name!r} is set in the server settings, not registered; change it there",
    )


@router.delete(
    "/api/delete",
    summary="Delete a model",
    response_model=StatusResponse,
    responses=_ERRORS,
    openapi_extra=_documented(DeleteRequest),
)
async def delete(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await _parse(request, DeleteRequest)
    record = _registered(state, body.model)
    await state.manager.unload(record.name)
    try:
        # A pulled file is deleted with its last name; a file added from elsewhere is kept.
        await asyncio.to_thread(
            functools.partial(
                state.registry.remove,
                record.name,
                delete_file_in=default_models_dir(state.settings),
            )
        )
    except RegistryError:
        raise ApiError(404, f"model {body.model!r} not found") from None
    return JSONResponse({"status": "success"})


@router.post(
    "/api/copy",
    summary="Give a model a second name",
    response_model=StatusResponse,
    responses=_ERRORS,
    openapi_extra=_documented(CopyRequest),
)
async def copy(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await _parse(request, CopyRequest)
    record = state.registry.find(body.source)
    try:
        if record is not None:
            copy_record = functools.partial(
                state.registry.copy, record.name, body.destination, replace=True
            )
            await asyncio.to_thread(copy_record)
        else:
            spec = _resolve(state, body.source)  # a configured model: register it by path
            add = functools.partial(state.registry.add, spec.path, body.destination, replace=True)
            await asyncio.to_thread(add)
    except RegistryError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse({"status": "success"})


@router.post("/api/create", summary="Not supported", responses=_UNSUPPORTED)
@router.post("/api/push", summary="Not supported", responses=_UNSUPPORTED)
async def unsupported(request: Request) -> JSONResponse:
    """Hoshikage runs GGUF files as they are: there are no Modelfiles to build or push."""
    name = request.url.path.rsplit("/", 1)[-1]
    raise ApiError(
        501,
        f"/api/{name} is not supported: register GGUF files with `hoshikage models add`, "
        "or pull them from the Hugging Face hub with /api/pull",
    )


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
