"""`create_app(settings)`: one FastAPI app with everything it needs; no module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hoshikage import __version__
from hoshikage.api import (
    anthropic_routes,
    catalogue_routes,
    memory_routes,
    native_routes,
    ollama_routes,
    openai_routes,
    pull_routes,
    responses_routes,
)
from hoshikage.api.deps import EXPOSED_HEADERS, AppState, admin_required, model_resolver
from hoshikage.api.errors import ApiError, error_response, install_error_handlers
from hoshikage.api.metrics import Metrics, MetricsMiddleware
from hoshikage.api.service import InferenceService
from hoshikage.config import Settings
from hoshikage.memory.embedder import FunctionEmbedder, embedding_space
from hoshikage.memory.indexer import MemoryIndexer
from hoshikage.memory.setup import memory_bank
from hoshikage.models.gguf_info import GgufError
from hoshikage.models.manager import ModelManager, UnknownModelError
from hoshikage.models.registry import ModelRegistry
from hoshikage.store import Database, SessionStore

__all__ = ["AppState", "create_app", "load_api_keys"]  # AppState: the CLI reaches it here

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})  # reachable without an API key
# Routes that change the models every key uses: with keys set, only an admin key may call
# them (routes that change models only for some bodies call require_admin themselves).
ADMIN_PATHS = frozenset({"/api/pull", "/api/delete", "/api/copy", "/api/create", "/api/push"})


def load_api_keys(settings: Settings) -> frozenset[str]:
    keys = set(settings.api_keys)
    if settings.api_key_file is not None:
        try:
            text = settings.api_key_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read api_key_file {settings.api_key_file}: {exc}") from exc
        keys.update(line.strip() for line in text.splitlines() if line.strip())
    return frozenset(keys)


class ServiceEmbedding:
    """Embeds for memory from worker threads, through the model manager on the server's
    event loop: the embedding model loads on demand and unloads when idle like any other."""

    TIMEOUT_S = 300.0

    def __init__(self, service: InferenceService, model: str) -> None:
        self._service = service
        self._model = model
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the server starts

    def __call__(self, texts: list[str]) -> list[list[float]]:
        if self.loop is None:
            raise RuntimeError("the server is not running")
        future = asyncio.run_coroutine_threadsafe(
            self._service.embed(self._model, texts, truncate=True), self.loop
        )
        return future.result(timeout=self.TIMEOUT_S).vectors


def create_app(settings: Settings) -> FastAPI:
    database = Database(settings.database_path)
    registry = ModelRegistry(database)
    sessions = SessionStore(database)
    resolve = model_resolver(settings, registry)
    manager = ModelManager(settings, resolve)
    service = InferenceService(settings, manager, sessions)
    bridge = None
    if settings.memory:
        embedder = None
        if settings.embedding_model:
            try:
                spec = resolve(settings.embedding_model)
                space = embedding_space(spec.path)
            except (UnknownModelError, GgufError, OSError) as exc:
                raise ValueError(f"embedding_model: {exc}") from exc
            bridge = ServiceEmbedding(service, spec.name)
            embedder = FunctionEmbedder(space, bridge)
        service.bank = memory_bank(settings, database, embedder)
    state = AppState(
        settings=settings,
        database=database,
        sessions=sessions,
        registry=registry,
        manager=manager,
        service=service,
        api_keys=load_api_keys(settings) | frozenset(settings.admin_api_keys),
        admin_api_keys=frozenset(settings.admin_api_keys),
        metrics=Metrics(manager, service),
        bank=service.bank,
    )
    service.observe_finish = state.metrics.observe_finish

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await manager.start()
        if bridge is not None:
            bridge.loop = asyncio.get_running_loop()
        if service.bank is not None:
            service.indexer = MemoryIndexer(service.bank)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if service.indexer is not None:
                # Its embedding calls need the loop: stop it before the loop stops serving.
                await asyncio.to_thread(service.indexer.close)
            await manager.close()
            database.close()

    app = FastAPI(
        title="Hoshikage",
        version=__version__,
        description="Local LLM server: OpenAI- and Ollama-compatible APIs over llama.cpp.",
        lifespan=lifespan,
    )
    app.state.hoshikage = state
    install_error_handlers(app)
    # Inside the guards (added later = further out): its 413 must reach FastAPI's body read
    # directly, not through the guard's wrapped receive.
    app.add_middleware(RequestBodies, max_bytes=settings.max_request_bytes)
    _install_guards(app, state)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
        )
    # Outermost, so that requests refused by the guards are counted too.
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    _include_routes(app)
    return app


class RequestBodies:
    """Request bodies: JSON whatever their content type claims, and never over the limit.

    `curl -d '{...}'` sends form-encoded bodies, and that is how Ollama's own examples call
    its API; no route here takes a form, so such a body is JSON sent without the header.
    The guard refuses a declared Content-Length over max_request_bytes; this also stops a
    chunked body (no length declared) once it grows past the limit.
    """

    _RELABELED = (b"application/x-www-form-urlencoded", b"text/plain")

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if any(k == b"content-type" and v.startswith(self._RELABELED) for k, v in headers):
            scope = dict(scope)
            scope["headers"] = [
                (k, b"application/json" if k == b"content-type" else v) for k, v in headers
            ]
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI's own HTTPException: it re-raises that one from a body read.
                    raise HTTPException(
                        413,
                        f"request body over the limit of {self.max_bytes} bytes "
                        f"(max_request_bytes)",
                    )
            return message

        await self.app(scope, receive_within_limit, send)


def _matching_key(request: Request, keys: frozenset[str]) -> str | None:
    """The configured key the request's bearer token is, compared in constant time.

    Bytes, not str: compare_digest refuses non-ASCII text. Headers arrive decoded as
    Latin-1, so encoding back gives the bytes the client sent, to match a key's UTF-8.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = request.headers.get("x-api-key", "")  # how Anthropic's clients send it
        if not token:
            return None
    sent = token.strip().encode("latin-1")
    found = None
    for key in keys:  # every key is compared, so the time does not say which one matched
        if hmac.compare_digest(sent, key.encode("utf-8")):
            found = key
    return found


def _include_routes(app: FastAPI) -> None:
    # Only /v1/models/{model_id:path} takes a path; it comes after the other /v1 routes it
    # could otherwise shadow, as it did inside the OpenAI router.
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(responses_routes.router)
    app.include_router(catalogue_routes.router)
    app.include_router(ollama_routes.router)
    app.include_router(pull_routes.router)
    app.include_router(native_routes.router)
    app.include_router(memory_routes.router)


def _install_guards(app: FastAPI, state: AppState) -> None:
    """API keys (every route but /health) and the request size limit."""

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if state.api_keys and path not in OPEN_PATHS and request.method != "OPTIONS":
            key = _matching_key(request, state.api_keys)
            if key is None:
                return error_response(
                    request,
                    ApiError(
                        401,
                        "missing or wrong API key: send 'Authorization: Bearer <key>' (or "
                        "'x-api-key: <key>')",
                        code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"},
                    ),
                )
            request.state.admin = key in state.admin_api_keys
            request.state.api_key = key  # whose sessions and memory (namespace_of)
            if path in ADMIN_PATHS and not request.state.admin:
                return error_response(request, admin_required(path))
        length = request.headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > state.settings.max_request_bytes
        ):
            return error_response(
                request,
                ApiError(
                    413,
                    f"request body of {length} bytes is over the limit of "
                    f"{state.settings.max_request_bytes} (max_request_bytes)",
                ),
            )
        return await call_next(request)
