"""The model catalogue, in both APIs: `/v1/models` (OpenAI) and `/api/tags`, `/api/ps`,
`/api/show` (Ollama). Registered models and the models the server's settings name, described
from the registry or, for a configured file, from its GGUF header (never by loading it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hoshikage.api.deps import AppState, served_models, state_of
from hoshikage.api.errors import ApiError
from hoshikage.api.ollama_schemas import PsResponse, ShowRequest, ShowResponse, TagsResponse
from hoshikage.api.ollama_wire import (
    ERRORS,
    FOREVER,
    documented,
    parse,
    resolve,
    tagged,
    timestamp,
)
from hoshikage.config import Settings
from hoshikage.engine.templates import BUILTIN_TEMPLATES, FALLBACK_TEMPLATE_NAME
from hoshikage.models.gguf_info import GgufError, parameter_label, read_gguf_info
from hoshikage.models.manager import ModelSpec
from hoshikage.models.registry import ModelRecord
from hoshikage.runtime import sampling_defaults
from hoshikage.turns.reasoning import template_thinks

log = logging.getLogger("hoshikage.api.ollama_routes")  # the name its lines were logged under

# Each half keeps the prefix and tag of the API it belongs to; `router` holds both.
_openai = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
_ollama = APIRouter(tags=["Ollama API"])


# --- OpenAI ------------------------------------------------------------------------------------
@_openai.get("/models", summary="List models")
async def list_models(request: Request) -> dict[str, Any]:
    """Registered models and the models the server's settings name."""
    cards = await asyncio.to_thread(_model_cards, state_of(request))
    return {"object": "list", "data": sorted(cards.values(), key=lambda card: card["id"])}


@_openai.get("/models/{model_id:path}", summary="Retrieve a model")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    card = await asyncio.to_thread(_find_card, state, model_id)
    if card is None:
        raise ApiError(
            404,
            f"model {model_id!r} not found (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    return card


def _card(model_id: str, created: float) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": "hoshikage"}


def _model_cards(state: AppState) -> dict[str, dict[str, Any]]:
    cards = {record.name: _card(record.name, record.added_at) for record in state.registry.list()}
    for name, path in served_models(state.settings).items():
        cards.setdefault(name, _card(name, _mtime(path)))
    return cards


def _find_card(state: AppState, model_id: str) -> dict[str, Any] | None:
    record = state.registry.find(model_id)
    if record is not None:
        return _card(record.name, record.added_at)
    served = served_models(state.settings)
    name = model_id if model_id in served else model_id.removesuffix(":latest")
    return _card(name, _mtime(served[name])) if name in served else None


def _mtime(path: Path) -> float:
    try:
        return float(path.stat().st_mtime)
    except OSError:
        return 0.0


# --- Ollama ------------------------------------------------------------------------------------
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


@_ollama.get("/api/tags", summary="List models", response_model=TagsResponse)
async def tags(request: Request) -> JSONResponse:
    state = state_of(request)
    facts = await asyncio.to_thread(_all_facts, state)
    return JSONResponse(
        {
            "models": [
                {
                    "name": tagged(fact.name),
                    "model": tagged(fact.name),
                    "modified_at": timestamp(fact.modified_at),
                    "size": fact.size,
                    "digest": fact.digest,
                    "details": fact.details,
                }
                for fact in facts
            ]
        }
    )


@_ollama.get("/api/ps", summary="List loaded models", response_model=PsResponse)
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
        expires = timestamp(
            status.expires_at
            if status.expires_at is not None
            else time.time() + FOREVER.total_seconds()
        )
        # Estimated bytes of weights and KV cache; on a GPU backend they live in its memory
        # (a hybrid split is not measured, so it counts as system memory).
        on_gpu = status.backend not in ("cpu", "") and not status.backend.startswith("hybrid")
        running.append(
            {
                "name": tagged(status.name),
                "model": tagged(status.name),
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


@_ollama.post(
    "/api/show",
    summary="Show a model's details",
    response_model=ShowResponse,
    responses=ERRORS,
    openapi_extra=documented(ShowRequest),
)
async def show(request: Request) -> JSONResponse:
    state = state_of(request)
    body = await parse(request, ShowRequest)
    spec = resolve(state, body.model)
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
        f"# FROM {tagged(fact.name)}",
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
        "capabilities": _capabilities(fact, template),
        "modified_at": timestamp(fact.modified_at),
    }
    if isinstance(license_text, str):
        payload["license"] = license_text
    return JSONResponse(payload)


def _capabilities(fact: _Facts, template: str) -> list[str]:
    """As Ollama lists them; every text model calls tools here (with the generic tool prompt
    when its template lays out none), and those whose template thinks, think."""
    if fact.embedding:
        return ["embedding"]
    return ["completion", "tools", *(["thinking"] if template_thinks(template) else [])]


router = APIRouter()
router.include_router(_openai)
router.include_router(_ollama)
