"""Wiring shared by every front end: settings to engine options, model names to files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from hoshikage.config import Settings
from hoshikage.engine import EngineError, LoadOptions, SamplingParams
from hoshikage.store import Database, SessionStore

T = TypeVar("T")


def _from_settings(cls: type[T], settings: Settings, **extra: Any) -> T:
    """An engine dataclass filled from the settings of the same names."""
    values = {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(cls)  # type: ignore[arg-type]
        if field.name in Settings.model_fields
    }
    return cls(**{**values, **extra})


def load_options(settings: Settings) -> LoadOptions:
    """Options for one user (chat, bench): one slot; the server's manager sets `parallel`."""
    return _from_settings(LoadOptions, settings, parallel=1)


def sampling_defaults(settings: Settings) -> SamplingParams:
    return _from_settings(SamplingParams, settings, stop=tuple(settings.stop))


def resolve_model(name: str | None, settings: Settings) -> Path:
    """An alias from the settings, a path to a GGUF file, or a model registered in the store
    (`hoshikage models add` / `pull`); an error that says what to do otherwise."""
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
    registered = _registered_models(settings)
    record = registered.get(name) or registered.get(f"{name}:latest")
    if record is not None:
        return record
    known = ", ".join(sorted({*settings.model_aliases, *registered})) or "none defined"
    raise EngineError(
        f"no model {name!r}: it is neither a file, an alias nor a registered model "
        f"(known: {known}; see `hoshikage models ls`)"
    )


def _registered_models(settings: Settings) -> dict[str, Path]:
    if not settings.database_path.exists():
        return {}
    from hoshikage.models.registry import open_registry  # the registry imports this module

    with open_registry(settings) as registry:
        return {record.name: Path(record.path) for record in registry.list()}


def open_sessions(settings: Settings) -> SessionStore:
    return SessionStore(Database(settings.database_path))
