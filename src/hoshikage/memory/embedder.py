"""Turning text into vectors for memory: a GGUF embedding model run by Hoshikage's engine.

Every embedder names its vector space (`space`): the model's name, architecture, width and
file size. Vectors are only ever compared within one space; a new embedding model means
`hoshikage memory reindex`, never a silent mix of spaces.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from hoshikage.engine import Engine, LoadOptions
from hoshikage.memory.vectors import Vector
from hoshikage.models.gguf_info import read_gguf_info

log = logging.getLogger(__name__)

# Inputs per call to the engine: bounds one request's memory and keeps others moving.
EMBED_CHUNK = 64


class Embedder(Protocol):
    @property
    def space(self) -> str:
        """The vector space its vectors belong to."""
        ...

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One L2-normalised float32 vector per text, in order."""
        ...


def embedding_space(path: Path) -> str:
    """A name for the vector space of the embedding model in `path`, read from its header."""
    info = read_gguf_info(path)
    arch = info.architecture or "unknown"
    name = info.metadata.get("general.name") or path.stem
    width = info.metadata.get(f"{arch}.embedding_length", "?")
    return f"{name}/{arch}/{width}/{path.stat().st_size}"


def as_vectors(rows: Sequence[Sequence[float]]) -> list[Vector]:
    return [np.asarray(row, dtype=np.float32) for row in rows]


class FunctionEmbedder:
    """An embedder over a function that returns vectors (the server's: through its model
    manager, so the embedding model loads on demand and unloads when idle)."""

    def __init__(self, space: str, embed: Callable[[list[str]], list[list[float]]]) -> None:
        self._space = space
        self._embed = embed

    @property
    def space(self) -> str:
        return self._space

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors: list[Vector] = []
        for start in range(0, len(texts), EMBED_CHUNK):
            vectors += as_vectors(self._embed(list(texts[start : start + EMBED_CHUNK])))
        return vectors


class EngineEmbedder:
    """An embedding model loaded in this process on first use (the terminal chat, the CLI)."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        self._path = path
        self._options = dataclasses.replace(options, embedding=True, n_ctx=0, parallel=1)
        self._space = embedding_space(path)
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def space(self) -> str:
        return self._space

    def _loaded(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = Engine(self._path, self._options)
                log.info("loaded embedding model %s for memory", self._path.name)
            return self._engine

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        engine = self._loaded()
        vectors: list[Vector] = []
        for start in range(0, len(texts), EMBED_CHUNK):
            result = engine.embed(list(texts[start : start + EMBED_CHUNK])).result()
            vectors += as_vectors(result.vectors)
        return vectors

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
