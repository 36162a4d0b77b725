"""The OpenAI-compatible API under /v1: chat completions, completions, embeddings.

Responses follow the `openai` package's own types. Two things go beyond OpenAI, so that
nothing happens silently: when older messages were left out to fit the context window, the
response says how many (header `X-Hoshikage-Dropped-Messages`, and `usage.dropped_messages`);
and an answer cut short by the server itself (shutdown, unload) reports finish_reason
"length" — the text is incomplete, which "stop" would hide. The model list (`/v1/models`) is
in catalogue_routes.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import struct
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from hoshikage.api.bounds import BIAS_LIMIT
from hoshikage.api.deps import (
    namespace_of,
    run_headers,
    state_of,
)
from hoshikage.api.errors import ApiError
from hoshikage.api.openai_render import (
    FINISH_REASONS,
    Reply,
    chat_delta,
    chat_logprobs,
    chat_message,
    completion_logprobs,
    sse,
    stream_error,
    sum_usage,
    usage_of,
)
from hoshikage.api.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
    SamplingFields,
)
from hoshikage.api.service import CompletionJob, TurnRun
from hoshikage.api.streaming import (
    OpenedRun,
    RunStream,
    client_gone,
    merged_events,
    wait_or_disconnect,
)
from hoshikage.config import Settings
from hoshikage.engine import EngineError, SamplingParams
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.runtime import sampling_with
from hoshikage.turns.vocabulary import (
    TextDelta,
    TurnFinished,
    TurnRequest,
)

log = logging.getLogger("hoshikage.api.openai")

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# llama.cpp reads the seed as uint32 and takes 0xFFFFFFFF to mean "random".
_SEED_RANGE = 2**32 - 1

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with stream=true server-sent events ending `data: [DONE]`.",
        "content": {"text/event-stream": {}},
    }
}


# --- request to engine ----------------------------------------------------------------------
def sampling_params(
    settings: Settings,
    body: SamplingFields,
    answer_limit: int | None,
    logprobs: int | None = None,
) -> SamplingParams:
    """The server's defaults, overridden by what the request sets."""
    stops = body.stop_strings()
    biases = tuple(
        # OpenAI: -100 "should result in a ban"; a bias of -100 alone may not ban.
        (int(token), -math.inf if bias <= -BIAS_LIMIT else bias)
        for token, bias in (body.logit_bias or {}).items()
    )
    return sampling_with(
        settings,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        repeat_penalty=body.repeat_penalty,
        repeat_last_n=body.repeat_last_n,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=None if body.seed is None else body.seed % _SEED_RANGE,
        max_tokens=answer_limit,
        stop=None if stops is None else tuple(stops),
        logit_bias=biases,
        ignore_eos=body.ignore_eos,
        grammar=_grammar(body.response_format),
        logprobs=logprobs,
    )


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


async def _chat_stream(
    opened: OpenedRun, reply: Reply, *, logprobs: bool
) -> AsyncGenerator[str, None]:
    """Every choice's chunks, as they come (each with its index), then the finishes."""

    def chunk(
        index: int, delta: dict[str, Any], finish: str | None = None, event: Any = None
    ) -> str:
        entries = chat_logprobs(event.logprobs) if logprobs and event is not None else None
        choice = {"index": index, "delta": delta, "logprobs": entries, "finish_reason": finish}
        return sse(reply.envelope([choice]))

    opening = {"delta": {"role": "assistant", "content": ""}, "logprobs": None}
    first = [{"index": i, **opening, "finish_reason": None} for i in range(len(opened.runs))]
    yield sse(reply.envelope(first, **opened.run.context_fields()))
    finishes: dict[int, str] = {}
    try:
        async for index, event in merged_events(opened.runs):
            if isinstance(event, TurnFinished):
                finishes[index] = FINISH_REASONS[event.finish_reason]
                continue
            delta = chat_delta(event)
            if delta is not None:
                yield chunk(index, delta, event=event if isinstance(event, TextDelta) else None)
    except Exception as exc:  # the stream has begun: the error becomes its last event
        await opened.close()
        yield stream_error(exc)
        return
    # Close (and so store a session's turn) before the client hears the end: a client that
    # sends its next message right after [DONE] must find this turn in the history.
    await opened.close()
    for index in sorted(finishes):
        yield chunk(index, {}, finishes[index])
    if reply.include_usage:
        usage = _usage_of_runs(opened.runs, chat=True, choices=len(opened.runs))
        yield sse({**reply.envelope([]), "usage": usage})
    yield sse("[DONE]")


def _usage_of_runs(runs: list[TurnRun], *, chat: bool, choices: int = 1) -> dict[str, Any]:
    """One usage for several answers: each prompt once (its `choices` answers share it, as
    OpenAI counts them), every answer's completion."""
    usages = []
    for position, run in enumerate(runs):
        assert run.finished is not None
        usage = usage_of(run.finished, run, chat=chat)
        if position % choices:  # another answer to a prompt already counted
            usage |= {"prompt_tokens": 0, "prompt_tokens_details": {"cached_tokens": 0}}
            usage["total_tokens"] = usage["completion_tokens"]
        usages.append(usage)
    total = sum_usage(usages)
    if chat:
        total["dropped_messages"] = runs[0].dropped_messages
    return total


async def _finish_or_leave(request: Request, opened: OpenedRun) -> list[TurnFinished] | None:
    """Every choice read to its end, or None if the client left first."""

    async def finish_all() -> list[TurnFinished]:
        return list(await asyncio.gather(*(run.finish() for run in opened.runs)))

    try:
        return await wait_or_disconnect(request, finish_all())
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

    Supports tools (tool_choice auto / none / required / a named function, forced ones
    grammar-constrained; parallel_tool_calls), thinking (reasoning_content; reasoning_effort,
    chat_template_kwargs.enable_thinking, reasoning_format none to keep it raw), stop,
    max_tokens / max_completion_tokens, seed, temperature, top_p, penalties, logit_bias,
    response_format (json_object, json_schema; grammar-enforced) and llama.cpp's top_k, min_p,
    repeat_penalty. With `session_id` (or `X-Session-Id`), the turn is stored in that
    session, and a request carrying only its new message continues the history.
    """
    state = state_of(request)
    if body.user:
        log.debug("chat request from user %r", body.user[:64])
    turn = TurnRequest(
        model=body.model,
        messages=body.engine_messages(),
        params=sampling_params(state.settings, body, body.answer_limit, body.logprobs_wanted),
        tool_use=body.tool_use(),
        reasoning=body.reasoning(),
        keep_alive=body.keep_alive,
        session=body.session_id or x_session_id,
        namespace=namespace_of(request, body.user),
        memory=body.memory,
    )
    opened = await OpenedRun.open(request, state.service.chat_choices(turn, body.choices))
    if opened is None:
        return client_gone()
    headers = run_headers(opened.run)
    if body.stream:
        reply = Reply.new("chatcmpl", body.model, "chat.completion.chunk", body.include_usage)
        return RunStream(
            _chat_stream(opened, reply, logprobs=body.logprobs_wanted is not None),
            opened=opened,
            media_type=SSE_MEDIA_TYPE,
            headers=headers | SSE_HEADERS,
        )
    finishes = await _finish_or_leave(request, opened)
    if finishes is None:
        return client_gone()
    reply = Reply.new("chatcmpl", body.model, "chat.completion")
    choices = [
        {
            "index": index,
            "message": chat_message(finished),
            "logprobs": None if body.logprobs_wanted is None else chat_logprobs(finished.logprobs),
            "finish_reason": FINISH_REASONS[finished.finish_reason],
        }
        for index, finished in enumerate(finishes)
    ]
    usage = _usage_of_runs(opened.runs, chat=True, choices=len(opened.runs))
    content = reply.envelope(choices, usage=usage, **opened.run.context_fields())
    return JSONResponse(content, headers=headers)


@router.post(
    "/completions",
    summary="Create a text completion",
    response_model=None,
    responses=_STREAM_DOC,
)
async def completions(body: CompletionRequest, request: Request) -> Response:
    """Continue a prompt (no chat template), streamed (SSE) or whole; `echo` supported.

    The prompt may be text or token ids, or a list of up to 16 of either: one choice each,
    generated together."""
    state = state_of(request)
    params = sampling_params(state.settings, body, body.answer_limit, body.logprobs)
    stack = AsyncExitStack()
    runs: list[TurnRun] = []  # prompt i's choice j is runs[i * n + j], as OpenAI numbers them
    try:
        for prompt in body.prompts:
            job = CompletionJob(
                model=body.model, prompt=prompt, params=params, keep_alive=body.keep_alive
            )
            opened = await OpenedRun.open(request, state.service.complete(job, body.choices))
            if opened is None:
                await stack.aclose()
                return client_gone()
            stack.push_async_callback(opened.close)
            runs += opened.runs
    except BaseException:
        await stack.aclose()
        raise
    echoes = [_echo(prompt, body.echo) for prompt in body.prompts for _ in range(body.choices)]
    if body.stream:
        reply = Reply.new("cmpl", body.model, "text_completion", body.include_usage)
        stream = _completion_stream(
            runs, echoes, reply, stack, logprobs=body.logprobs is not None, n=body.choices
        )
        return RunStream(stream, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS, closing=stack)
    try:
        finishes = await wait_or_disconnect(request, asyncio.gather(*(r.finish() for r in runs)))
    finally:
        await stack.aclose()
    if finishes is None:
        return client_gone()
    reply = Reply.new("cmpl", body.model, "text_completion")
    choices = [
        {
            "index": index,
            "text": echoes[index] + finished.text,
            "logprobs": None
            if body.logprobs is None
            else completion_logprobs(finished.logprobs, len(echoes[index])),
            "finish_reason": FINISH_REASONS[finished.finish_reason],
        }
        for index, finished in enumerate(finishes)
    ]
    usage = _usage_of_runs(runs, chat=False, choices=body.choices)
    return JSONResponse(reply.envelope(choices, usage=usage))


def _echo(prompt: str | list[int], echo: bool) -> str:
    if not echo:
        return ""
    if isinstance(prompt, str):
        return prompt
    raise ApiError(400, "echo needs a text prompt (not token ids)", param="echo")


async def _completion_stream(
    runs: list[TurnRun],
    echoes: list[str],
    reply: Reply,
    stack: AsyncExitStack,
    *,
    logprobs: bool,
    n: int,
) -> AsyncGenerator[str, None]:
    offsets = [len(echo) for echo in echoes]  # where each choice's next text starts

    def chunk(index: int, text: str, finish_reason: str | None = None, event: Any = None) -> str:
        entries = None
        if logprobs and isinstance(event, TextDelta):
            entries = completion_logprobs(event.logprobs, offsets[index])
            offsets[index] += len(text)
        choice = {"index": index, "text": text, "logprobs": entries, "finish_reason": finish_reason}
        return sse(reply.envelope([choice]))

    for index, echo in enumerate(echoes):
        if echo:
            yield chunk(index, echo)
    try:
        async for index, event in merged_events(runs):
            if isinstance(event, TextDelta):
                yield chunk(index, event.text, event=event)
            elif isinstance(event, TurnFinished):
                yield chunk(index, "", FINISH_REASONS[event.finish_reason])
    except Exception as exc:
        await stack.aclose()
        yield stream_error(exc)
        return
    await stack.aclose()
    if reply.include_usage:
        yield sse({**reply.envelope([]), "usage": _usage_of_runs(runs, chat=False, choices=n)})
    yield sse("[DONE]")


@router.post("/embeddings", summary="Create embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Pooled, L2-normalised vectors from an embedding model, as floats or base64 float32."""
    state = state_of(request)
    result = await wait_or_disconnect(
        request, state.service.embed(body.model, body.inputs, keep_alive=body.keep_alive)
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
