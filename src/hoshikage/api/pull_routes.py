"""Ollama's model management: `/api/pull` from the Hugging Face hub, `/api/delete`,
`/api/copy`, and `/api/create` / `/api/push`, which are refused (there are no Modelfiles).

With API keys set, only an admin key reaches these routes (the guard's ADMIN_PATHS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from hoshikage.api.deps import AppState, state_of
from hoshikage.api.errors import ApiError
from hoshikage.api.ollama_schemas import (
    CopyRequest,
    DeleteRequest,
    ErrorResponse,
    ProgressResponse,
    PullRequest,
    StatusResponse,
)
from hoshikage.api.ollama_wire import ERRORS, NDJSON, documented, line, parse, resolve
from hoshikage.api.streaming import client_gone, wait_or_disconnect
from hoshikage.models import hub
from hoshikage.models.registry import (
    ModelRecord,
    RegistryError,
    default_models_dir,
    normalize_name,
)

log = logging.getLogger("hoshikage.api.ollama_routes")  # the name its lines were logged under

router = APIRouter(tags=["Ollama API"])

_UNSUPPORTED: dict[int | str, dict[str, Any]] = {
    501: {"model": ErrorResponse, "description": "Not supported"}
}


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
        **ERRORS,
        200: {"description": "NDJSON progress lines (the default)", "content": {NDJSON: {}}},
    },
    openapi_extra=documented(PullRequest),
)
async def pull(request: Request) -> Response:
    state = state_of(request)
    body = await parse(request, PullRequest)
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
                yield line(step)
        yield line(await finished())

    return _PullStream(lines(), stop)


def _registered(state: AppState, name: str) -> ModelRecord:
    record = state.registry.find(name)
    if record is not None:
        return record
    resolve(state, name)  # a 404 if the name is unknown altogether
    raise ApiError(
        400,
        f"model {name!r} is set in the server settings, not registered; change it there",
    )


@router.delete(
    "/api/delete",
    summary="Delete a model",
    response_model=StatusResponse,
    responses=ERRORS,
    openapi_extra=documented(DeleteRequest),
)
async def delete(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await parse(request, DeleteRequest)
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
    responses=ERRORS,
    openapi_extra=documented(CopyRequest),
)
async def copy(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await parse(request, CopyRequest)
    record = state.registry.find(body.source)
    try:
        if record is not None:
            copy_record = functools.partial(
                state.registry.copy, record.name, body.destination, replace=True
            )
            await asyncio.to_thread(copy_record)
        else:
            spec = resolve(state, body.source)  # a configured model: register it by path
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
