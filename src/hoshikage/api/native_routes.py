"""Hoshikage's own routes: health, status, sessions, presets and Prometheus metrics.

Sessions are the same store the terminal chat uses: a conversation begun in `hoshikage chat`
can be read (and continued, with `X-Session-Id`) over HTTP, and the other way round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from hoshikage import __version__
from hoshikage.api.bounds import CheckedBody
from hoshikage.api.deps import model_resolver, namespace_of, state_of
from hoshikage.api.errors import ApiError
from hoshikage.api.metrics import CONTENT_TYPE_LATEST
from hoshikage.conversation.presets import PresetBook
from hoshikage.models.manager import UnknownModelError
from hoshikage.store import MessageRecord, SessionRecord, StoreError
from hoshikage.store.sessions import owner_of
from hoshikage.store.transfer import tool_fields
from hoshikage.sysinfo import gpu_memory, peak_rss_bytes, rss_bytes

log = logging.getLogger(__name__)

router = APIRouter(tags=["Hoshikage"])


# --- health and status ------------------------------------------------------------------------
@router.get("/health", summary="Liveness and readiness (no API key needed)")
async def health(request: Request) -> JSONResponse:
    """200 `{"status": "ok"}` while serving; 503 `{"status": "starting"}` before that, and 503
    `{"status": "degraded", "models": {name: why}}` while a model whose engine stopped is
    reloaded (or could not be)."""
    state = state_of(request)
    if not state.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    if state.manager.failures:
        return JSONResponse(
            {"status": "degraded", "models": dict(state.manager.failures)}, status_code=503
        )
    return JSONResponse({"status": "ok"})


@router.get("/v1/status", summary="Loaded models, queues and memory")
async def status(request: Request) -> dict[str, Any]:
    """Loaded models with their memory, keep-alive deadline and queue; process and GPU memory."""
    state = state_of(request)
    now = time.time()
    loaded = state.manager.status()
    gpus = await asyncio.to_thread(gpu_memory)  # NVML calls block briefly
    models = [
        {
            "name": model.name,
            "path": model.path,
            "embedding": model.embedding,
            "backend": model.backend,
            "n_ctx": model.n_ctx,
            "size_bytes": model.size_bytes,
            "estimated_bytes": model.estimated_bytes,
            "loaded_at": model.loaded_at,
            # None while requests use it (or when kept loaded for ever).
            "expires_at": model.expires_at,
            "expires_in_s": None
            if model.expires_at is None
            else round(max(model.expires_at - now, 0.0), 3),
            "active": model.active,
            "queued": model.queued,
            "slots": [{"cached_tokens": tokens, "busy": busy} for tokens, busy in model.slots],
        }
        for model in loaded
    ]
    return {
        "status": "starting"
        if not state.ready
        else ("degraded" if state.manager.failures else "ok"),
        "unavailable_models": dict(state.manager.failures),
        "engine_recoveries": state.manager.recoveries,
        "version": __version__,
        "uptime_s": round(now - state.started_at, 3),
        "models": models,
        "queue_depth": sum(model.queued for model in loaded),
        "in_flight": state.service.in_flight,
        "model_loads": state.manager.loads,
        "model_unloads": state.manager.unloads,
        "memory": {
            "rss_bytes": rss_bytes(),
            "peak_rss_bytes": peak_rss_bytes(),
            "budget_bytes": state.manager.memory_budget,
            "models_estimated_bytes": sum(model.estimated_bytes for model in loaded),
        },
        "gpus": None if gpus is None else [dataclasses.asdict(gpu) for gpu in gpus],
        "long_term_memory": {"mode": "off"}
        if state.bank is None
        else {
            **await asyncio.to_thread(state.bank.status, namespace_of(request)),
            "indexed": state.service.indexer.indexed if state.service.indexer else 0,
        },
        "limits": {
            "max_loaded_models": state.settings.max_loaded_models,
            "max_queue": state.settings.max_queue,
            "keep_alive_s": state.settings.keep_alive,
            "context_overflow": state.settings.context_overflow,
        },
    }


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    # Collected on the event loop: the manager's state is only changed there.
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


# --- sessions ---------------------------------------------------------------------------------
class SessionCreate(CheckedBody):
    """POST /v1/sessions."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, min_length=1, max_length=200, description="Unique name (optional)."
    )
    system_prompt: str | None = Field(None, max_length=100_000)
    preset: str | None = Field(
        None, max_length=100, description="Take the system prompt from this preset."
    )
    model: str | None = Field(None, min_length=1, max_length=300, description="A served model.")


def _session_json(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "session",
        "name": record.name,
        "model": record.model,
        "system_prompt": record.system_prompt,
        "params": record.params,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "message_count": record.message_count,
        "namespace": record.namespace,
    }


def _message_json(message: MessageRecord) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "created_at": message.created_at,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "ttft_s": message.ttft_s,
        "decode_tokens_per_s": message.decode_tokens_per_s,
        "total_s": message.total_s,
        "finish_reason": message.finish_reason,
        **tool_fields(message),  # tool_calls, tool_call_id, tool_name, reasoning when present
    }


async def _find_session(request: Request, reference: str) -> SessionRecord:
    """A session of the caller's namespace (another key's sessions are not found)."""
    state = state_of(request)
    owner = owner_of(namespace_of(request))
    try:
        return await asyncio.to_thread(state.sessions.find, reference, owner=owner)
    except StoreError as exc:
        raise ApiError(404, str(exc), param="session", code="session_not_found") from None


@router.get("/v1/sessions", summary="List sessions, most recently updated first")
async def list_sessions(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    owner = owner_of(namespace_of(request))
    records = await asyncio.to_thread(state_of(request).sessions.recent, limit, owner=owner)
    return {"object": "list", "data": [_session_json(record) for record in records]}


@router.post("/v1/sessions", summary="Create a session", status_code=201)
async def create_session(body: SessionCreate, request: Request) -> dict[str, Any]:
    state = state_of(request)
    system_prompt = body.system_prompt
    if body.preset is not None:
        if body.system_prompt is not None:
            raise ApiError(400, "give system_prompt or preset, not both", param="preset")
        try:
            system_prompt = PresetBook(state.settings.presets).get(body.preset).system_prompt
        except KeyError as exc:
            raise ApiError(400, str(exc.args[0]), param="preset") from None
    if body.model is not None:
        try:
            model_resolver(state.settings, state.registry)(body.model)
        except UnknownModelError as exc:
            raise ApiError(400, str(exc), param="model", code="model_not_found") from None

    namespace = namespace_of(request)  # its turns are remembered where its key looks

    def create() -> SessionRecord:
        return state.sessions.create(
            model=body.model, system_prompt=system_prompt, name=body.name, namespace=namespace
        )

    try:
        record = await asyncio.to_thread(create)
    except StoreError as exc:
        raise ApiError(409, str(exc), param="name", code="session_exists") from None
    log.info("created session %s", record.label)
    return _session_json(record)


@router.get("/v1/sessions/{reference}", summary="A session, by id, name or unique id prefix")
async def get_session(reference: str, request: Request) -> dict[str, Any]:
    return _session_json(await _find_session(request, reference))


@router.delete("/v1/sessions/{reference}", summary="Delete a session and its messages")
async def delete_session(reference: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    record = await _find_session(request, reference)
    await asyncio.to_thread(state.sessions.delete, record.id)
    log.info("deleted session %s", record.label)
    return {"id": record.id, "object": "session.deleted", "deleted": True}


@router.get("/v1/sessions/{reference}/messages", summary="The messages of a session, in order")
async def session_messages(reference: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    record = await _find_session(request, reference)
    messages = await asyncio.to_thread(state.sessions.messages, record.id)
    return {
        "object": "list",
        "session_id": record.id,
        "data": [_message_json(message) for message in messages],
    }


# --- presets ----------------------------------------------------------------------------------
@router.get("/v1/presets", summary="Persona presets (system prompts)")
async def presets(request: Request) -> dict[str, Any]:
    book = PresetBook(state_of(request).settings.presets)
    return {
        "object": "list",
        "data": [
            {
                "name": preset.name,
                "description": preset.description,
                "system_prompt": preset.system_prompt,
                "builtin": preset.builtin,
            }
            for preset in book.all()
        ],
    }
