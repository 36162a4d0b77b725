"""Wiring shared by every front end: settings to engine options, model names to files."""

from __future__ import annotations

from pathlib import Path

from hoshikage.config import Settings
from hoshikage.engine import EngineError, LoadOptions, SamplingParams
from hoshikage.store import Database, SessionStore


def load_options(settings: Settings) -> LoadOptions:
    return LoadOptions(
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
        n_threads=settings.n_threads,
        use_mmap=settings.use_mmap,
        use_mlock=settings.use_mlock,
        flash_attn=settings.flash_attn,
        kv_cache_type=settings.kv_cache_type,
        backend=settings.backend,
        gpu_layers=settings.gpu_layers,
        chat_template=settings.chat_template,
    )


def sampling_defaults(settings: Settings) -> SamplingParams:
    return SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        repeat_last_n=settings.repeat_last_n,
        presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty,
        seed=settings.seed,
        max_tokens=settings.max_tokens,
        stop=tuple(settings.stop),
    )


def resolve_model(name: str | None, settings: Settings) -> Path:
    """A registered alias or a path to a GGUF file; an error that says what to do otherwise."""
    if not name:
        raise EngineError(
            "no model given: pass --model PATH (a .gguf file) or an alias from model_aliases "
            "in the settings file, or set HOSHIKAGE_MODEL"
        )
    if name in settings.model_aliases:
        return settings.model_aliases[name].expanduser()
    path = Path(name).expanduser()
    if path.exists():
        return path
    aliases = ", ".join(sorted(settings.model_aliases)) or "none defined"
    raise EngineError(
        f"no model {name!r}: it is neither a file nor a registered alias (aliases: {aliases})"
    )


def open_sessions(settings: Settings) -> SessionStore:
    return SessionStore(Database(settings.database_path))
