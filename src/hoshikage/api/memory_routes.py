"""Long-term memory over HTTP: search, list, add, read and forget, per namespace.

A request only ever sees its own namespace: the one of its API key (or the local user's on a
server without keys), narrowed by `user` when given. A memory of another namespace is
answered as not found, never shown.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, field_validator

from hoshikage.api.bounds import CheckedBody
from hoshikage.api.deps import namespace_of, state_of
from hoshikage.api.errors import ApiError
from hoshikage.memory.bank import MemoryBank, memory_json
from hoshikage.store import MemoryFilter, StoreError
from hoshikage.store.sessions import owner_of

router = APIRouter(prefix="/v1/memory", tags=["Memory"])

UserParam = Annotated[
    str | None,
    Query(max_length=256, description="Narrow the namespace to this end user (as `user`)."),
]
SessionParam = Annotated[
    str | None,
    Query(min_length=1, max_length=200, description="Only this session's (id or name)."),
]
TimeParam = Annotated[
    str | None,
    Query(max_length=64, description="Unix seconds or an ISO 8601 date/time."),
]
SQLITE_MAX_INT = 2**63 - 1  # larger numbers cannot even be looked up
MemoryId = Annotated[int, Path(le=SQLITE_MAX_INT)]


def _bank(request: Request) -> MemoryBank:
    bank = state_of(request).bank
    if bank is None:
        raise ApiError(
            400,
            "memory is switched off on this server (setting memory = false)",
            code="memory_disabled",
        )
    return bank


def _time(value: str | None, name: str) -> float | None:
    """Unix seconds from seconds or an ISO 8601 date/time; a 400 that says why otherwise."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise ApiError(
                400, f"{name}={value!r} is neither Unix seconds nor an ISO 8601 date", param=name
            ) from None
        except (OverflowError, OSError):
            raise ApiError(400, f"{name}={value!r} is out of range", param=name) from None
    if not math.isfinite(seconds):
        raise ApiError(400, f"{name}={value!r} is not a time", param=name)
    return seconds


def _filter(
    request: Request,
    user: str | None,
    session: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> MemoryFilter:
    return MemoryFilter(
        namespace=namespace_of(request, user),
        session_id=session,
        since=_time(since, "since"),
        until=_time(until, "until"),
    )


class MemoryCreate(CheckedBody):
    """POST /v1/memory: a fact to remember, added by hand."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000, description="What to remember.")
    importance: float = Field(1.0, ge=0.0, le=1.0, description="0 … 1; ranks close matches.")
    session_id: str | None = Field(None, max_length=200, description="Tie it to a session.")
    user: str | None = Field(None, max_length=256, description="End user within the key.")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is blank: there is nothing to remember")
        return text


@router.get("/search", summary="Search memories by meaning and keywords")
async def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=4000, description="What to look for.")],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    session: SessionParam = None,
    since: TimeParam = None,
    until: TimeParam = None,
    user: UserParam = None,
) -> dict[str, Any]:
    """Best matches first, each with its score (blended cosine similarity and keyword
    relevance; keyword relevance alone without an embedding model)."""
    bank = _bank(request)
    where = _filter(request, user, await _known_session(request, session), since, until)
    hits = await asyncio.to_thread(bank.search, q, where, limit=limit, min_score=min_score)
    return {
        "object": "list",
        "mode": bank.mode,
        "data": [{"object": "memory", **hit.as_dict()} for hit in hits],
    }


@router.get("", summary="List memories, newest first")
async def list_memories(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=SQLITE_MAX_INT)] = 0,
    session: SessionParam = None,
    since: TimeParam = None,
    until: TimeParam = None,
    user: UserParam = None,
) -> dict[str, Any]:
    bank = _bank(request)
    where = _filter(request, user, await _known_session(request, session), since, until)
    records = await asyncio.to_thread(bank.store.recent, where, limit=limit, offset=offset)
    return {"object": "list", "data": [{"object": "memory", **memory_json(r)} for r in records]}


@router.post("", summary="Remember a fact", status_code=201)
async def add_memory(body: MemoryCreate, request: Request) -> dict[str, Any]:
    bank = _bank(request)
    record = await asyncio.to_thread(
        bank.add_fact,
        namespace_of(request, body.user),
        body.text,
        importance=body.importance,
        session_id=await _known_session(request, body.session_id, "session_id"),
    )
    return {"object": "memory", **memory_json(record)}


async def _known_session(
    request: Request, reference: str | None, param: str = "session"
) -> str | None:
    """The id of a session of the caller's namespace, by id or name; 404 if there is none."""
    if reference is None:
        return None
    sessions = state_of(request).sessions
    owner = owner_of(namespace_of(request))
    try:
        return (await asyncio.to_thread(sessions.find, reference, owner=owner)).id
    except StoreError:
        raise ApiError(
            404, f"no session {reference!r}", param=param, code="session_not_found"
        ) from None


@router.get("/{memory_id}", summary="One memory")
async def get_memory(
    memory_id: MemoryId, request: Request, user: UserParam = None
) -> dict[str, Any]:
    bank = _bank(request)
    record = await asyncio.to_thread(bank.get, namespace_of(request, user), memory_id)
    if record is None:
        raise _not_found(memory_id)
    return {"object": "memory", **memory_json(record)}


@router.delete("/{memory_id}", summary="Forget one memory for good")
async def forget_memory(
    memory_id: MemoryId, request: Request, user: UserParam = None
) -> dict[str, Any]:
    bank = _bank(request)
    forgotten = await asyncio.to_thread(bank.forget, namespace_of(request, user), [memory_id])
    if not forgotten:
        raise _not_found(memory_id)
    return {"object": "memory.deleted", "id": memory_id, "deleted": True}


@router.delete("", summary="Forget a conversation's memories (or all of them)")
async def forget_many(
    request: Request,
    session: SessionParam = None,
    all_memories: Annotated[
        bool, Query(alias="all", description="Forget every memory of the namespace.")
    ] = False,
    user: UserParam = None,
) -> JSONResponse:
    """`?session=<id or name>` forgets what that conversation left in memory (the session
    itself stays); `?all=true` forgets the whole namespace."""
    bank = _bank(request)
    if session is None and not all_memories:
        raise ApiError(
            400, "say what to forget: ?session=<id or name>, or ?all=true", param="session"
        )
    session_id = await _known_session(request, session) if session else None
    where = MemoryFilter(namespace=namespace_of(request, user), session_id=session_id)
    forgotten = await asyncio.to_thread(bank.forget_where, where)
    return JSONResponse({"object": "list", "deleted": len(forgotten), "session_id": session_id})


def _not_found(memory_id: int) -> ApiError:
    return ApiError(404, f"no memory {memory_id}", param="memory_id", code="memory_not_found")
