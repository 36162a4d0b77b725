"""What the Ollama route modules share: request bodies, timestamps, NDJSON lines, model names.

Bodies are parsed by hand rather than by FastAPI: Ollama's own examples use `curl -d`, so a
body is read as JSON whatever its Content-Type, and a bad one is answered in Ollama's words
(`{"error": "..."}`, 400).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from hoshikage.api.bounds import InvalidTextError, check_request_text
from hoshikage.api.deps import AppState, model_resolver
from hoshikage.api.errors import ApiError
from hoshikage.api.ollama_schemas import IGNORED_OPTIONS, ErrorResponse, OllamaBody, Options
from hoshikage.models.manager import ModelSpec, UnknownModelError

log = logging.getLogger("hoshikage.api.ollama_routes")  # the name its lines were logged under

NDJSON = "application/x-ndjson"
# Ollama's `ps` shows a model kept loaded forever with an expiry centuries ahead; its CLI
# prints "Forever" for anything more than 20 years away.
FOREVER = timedelta(days=365 * 100)

B = TypeVar("B", bound=BaseModel)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
}


# --- request bodies ----------------------------------------------------------------------------
def documented(model: type[BaseModel]) -> dict[str, Any]:
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


async def parse(request: Request, model: type[B]) -> B:
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
def timestamp(seconds: float | None = None) -> str:
    """RFC 3339 in UTC, as Go writes time.Time into JSON; a moment past what a timestamp can
    hold (a deadline centuries away) is written as the far future Ollama shows for ever."""
    try:
        moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        moment = datetime.now(timezone.utc) + FOREVER
    return moment.isoformat().replace("+00:00", "Z")


def ns(seconds: float) -> int:
    return max(round(seconds * 1e9), 0)


def line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"


def tagged(name: str) -> str:
    """Ollama always shows a tag: "llama3" is listed as "llama3:latest"."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def resolve(state: AppState, name: str) -> ModelSpec:
    try:
        return model_resolver(state.settings, state.registry)(name)
    except UnknownModelError:
        # Ollama's words: clients look for them to offer a pull.
        raise ApiError(404, f'model "{name}" not found, try pulling it first') from None
