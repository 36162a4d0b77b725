"""What every route module shares: the app's state, model names, headers and the admin check.

Route modules import this, never `app.py` (which imports them to build the app).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from hoshikage.api.errors import ApiError
from hoshikage.api.metrics import Metrics
from hoshikage.api.service import InferenceService, TurnRun
from hoshikage.config import Settings
from hoshikage.memory.bank import MemoryBank
from hoshikage.models.gguf_info import GgufError, read_gguf_info
from hoshikage.models.manager import ModelManager, ModelSpec, UnknownModelError
from hoshikage.models.registry import ModelRegistry
from hoshikage.store import Database, SessionStore

log = logging.getLogger("hoshikage.api.app")  # the name its lines were logged under

DROPPED_HEADER = "X-Hoshikage-Dropped-Messages"  # older messages left out of the prompt
SESSION_HEADER = "X-Session-Id"  # the session a turn was stored in
TOOL_FORMAT_HEADER = "X-Hoshikage-Tool-Format"  # how tools were offered: "hermes", "… (generic)"
MEMORIES_HEADER = "X-Hoshikage-Memories"  # ids of the memories put into the context
# Response headers a browser app may read (CORS).
EXPOSED_HEADERS = (
    DROPPED_HEADER,
    SESSION_HEADER,
    MEMORIES_HEADER,
    TOOL_FORMAT_HEADER,
    "Retry-After",
)


@dataclass
class AppState:
    """Everything a route may use, reached as `request.app.state.hoshikage`."""

    settings: Settings
    database: Database
    sessions: SessionStore
    registry: ModelRegistry
    manager: ModelManager
    service: InferenceService
    api_keys: frozenset[str]  # every key accepted, admin keys included
    admin_api_keys: frozenset[str]  # keys that may also change models
    metrics: Metrics  # routes of every API report finished generations here
    bank: MemoryBank | None = None  # None: memory is switched off
    started_at: float = field(default_factory=time.time)
    ready: bool = False


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.hoshikage
    return state


def configured_models(settings: Settings) -> dict[str, Path]:
    """The models the settings name to serve (`model`, `embedding_model`): name → file."""
    return {
        name: settings.model_aliases.get(name, Path(name)).expanduser()
        for name in (settings.model, settings.embedding_model)
        if name
    }


def served_models(settings: Settings) -> dict[str, Path]:
    """Models the settings name, as listed to clients: the aliases, and the configured
    models given by path under their files' stems (one named by an alias keeps that name
    only, so that it is listed once)."""
    served: dict[str, Path] = {
        alias: path.expanduser() for alias, path in settings.model_aliases.items()
    }
    for name, path in configured_models(settings).items():
        if name not in settings.model_aliases:
            served.setdefault(path.stem, path)
    return served


def run_headers(run: TurnRun) -> dict[str, str]:
    """What a chat's response headers say about its context and tools, in every API."""
    headers = {DROPPED_HEADER: str(run.dropped_messages)}
    if run.plan is not None and run.plan.tool_format is not None:
        headers[TOOL_FORMAT_HEADER] = run.plan.format_label
    if run.session_id is not None:
        headers[SESSION_HEADER] = run.session_id
    if run.context is not None:
        headers[MEMORIES_HEADER] = ",".join(str(m.id) for m in run.context.memories)
    if run.dropped_messages:
        log.info("dropped %d old messages to fit n_ctx %d", run.dropped_messages, run.n_ctx)
    return headers


def namespace_of(request: Request, user: str | None = None) -> str:
    """Whose memory a request reads and writes: its API key's (never the key itself), a
    `user` within it, or the local user's when the server has no keys."""
    base = "local"
    if state_of(request).api_keys:
        # The key the guard matched (sent as a bearer token or as x-api-key).
        token = getattr(request.state, "api_key", None) or ""
        base = "key:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return f"{base}/user:{user}" if user else base


def admin_required(what: str) -> ApiError:
    return ApiError(
        403,
        f"{what} changes the models every key uses: it needs an admin API key "
        "(admin_api_keys / --admin-api-key)",
        code="admin_key_required",
    )


def require_admin(request: Request, what: str) -> None:
    """Refuse a model-changing request from a plain key (no keys at all: everyone may)."""
    if state_of(request).api_keys and not getattr(request.state, "admin", False):
        raise admin_required(what)


@functools.lru_cache(maxsize=64)
def _embedding_by_header(path: Path, mtime_ns: int) -> bool:
    try:
        return read_gguf_info(path).is_embedding_model
    except (GgufError, OSError):
        return False  # loading will fail with the real reason


def is_embedding_file(path: Path) -> bool:
    """Whether a configured (unregistered) model file is an embedding model, from its header."""
    try:
        return _embedding_by_header(path, path.stat().st_mtime_ns)
    except OSError:
        return False


def model_resolver(settings: Settings, registry: ModelRegistry) -> Callable[[str], ModelSpec]:
    """Names clients may use: registered models, configured aliases, and the served model.

    A client never names a path: only what the operator registered or configured is opened.
    """
    served = served_models(settings)
    for name, path in configured_models(settings).items():
        served.setdefault(name, path)  # also answers to the name it was configured with

    def resolve(name: str) -> ModelSpec:
        record = registry.find(name)
        if record is not None:
            return ModelSpec(
                name=record.name,
                path=Path(record.path),
                embedding=record.embedding,
                keep_alive_s=record.keep_alive_s,
            )
        path = served.get(name) or served.get(name.removesuffix(":latest"))
        if path is not None:
            return ModelSpec(
                name=name.removesuffix(":latest"), path=path, embedding=is_embedding_file(path)
            )
        known = sorted({*served, *(r.name for r in registry.list())})
        raise UnknownModelError(
            f"model {name!r} not found; available: {', '.join(known) or 'none'} "
            f"(add one with `hoshikage models add` or `pull`)"
        )

    return resolve
