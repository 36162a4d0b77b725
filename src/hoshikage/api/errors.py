"""Errors in each API's own shape: OpenAI's {"error": {...}} under /v1, Ollama's under /api."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hoshikage.engine import ContextOverflowError, EngineError, EngineUnavailableError
from hoshikage.models.manager import ManagerError, OverloadedError, UnknownModelError
from hoshikage.store import StoreError
from hoshikage.turns.vocabulary import TurnRequestError

log = logging.getLogger(__name__)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_overloaded",
}


class ApiError(Exception):
    """An error to answer with; rendered in the shape of the API the request used."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        # Machine-readable facts beside the message (e.g. n_prompt_tokens and n_ctx, as
        # llama-server reports a context overflow).
        self.details = details or {}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/") or path == "/api"


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_response(request: Request, error: ApiError) -> JSONResponse:
    if is_ollama_path(request.url.path):
        body: dict[str, object] = {**error.details, "error": error.message}
    elif is_anthropic_path(request.url.path):
        kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
        body = {"type": "error", "error": {**error.details, "type": kind, "message": error.message}}
    else:
        body = {
            "error": {
                **error.details,
                "message": error.message,
                "type": _OPENAI_TYPES.get(error.status, "server_error"),
                "param": error.param,
                "code": error.code,
            }
        }
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def as_api_error(exc: Exception) -> ApiError:
    """The ApiError for an exception from below the API (engine, manager, store)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OverloadedError):
        return ApiError(
            429,
            str(exc),
            code="queue_full",
            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
        )
    if isinstance(exc, ManagerError):
        return ApiError(
            exc.status,
            str(exc),
            param="model" if exc.status in (400, 404) else None,
            code="model_not_found" if isinstance(exc, UnknownModelError) else None,
        )
    if isinstance(exc, ContextOverflowError):
        return ApiError(
            400,
            f"{exc} (n_prompt_tokens={exc.n_prompt_tokens}, n_ctx={exc.n_ctx})",
            param=exc.input_name,
            code="context_length_exceeded",
            details={"n_prompt_tokens": exc.n_prompt_tokens, "n_ctx": exc.n_ctx},
        )
    if isinstance(exc, EngineUnavailableError):  # the engine stopped; it is being reloaded
        return ApiError(503, str(exc), code="engine_unavailable", headers={"Retry-After": "1"})
    if isinstance(exc, TurnRequestError):  # tools, tool_choice or a history out of order
        return ApiError(400, str(exc), param=exc.param)
    if isinstance(exc, EngineError):
        return ApiError(400, str(exc))
    if isinstance(exc, RecursionError):  # JSON or a schema nested deeper than can be read
        return ApiError(400, "the request is nested too deeply")
    if isinstance(exc, StoreError):  # a session name taken (by another key's session, say)
        return ApiError(409, str(exc), param="session_id", code="session_conflict")
    log.error("unexpected error: %s", exc, exc_info=exc)
    return ApiError(500, "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for item in exc.errors():
            if item.get("type") == "json_invalid":
                reason = (item.get("ctx") or {}).get("error", "")
                position = item.get("loc", ("body", "?"))[-1]
                problems.append(f"malformed JSON body: {reason} at character {position}")
                continue
            location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            param = param or location or None
            problems.append(f"{location or 'body'}: {item.get('msg')}")
        return error_response(request, ApiError(400, "; ".join(problems), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, as_api_error(exc))

    for kind in (ManagerError, EngineError, StoreError, RecursionError):

        @app.exception_handler(kind)
        async def _known(request: Request, exc: Exception) -> JSONResponse:
            return error_response(request, as_api_error(exc))
