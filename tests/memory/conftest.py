"""Memory fixtures: the real MiniLM embedding model, and banks over a fresh store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hoshikage.config import load_settings
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.embedder import Embedder
from hoshikage.memory.setup import memory_bank
from hoshikage.store import Database, SessionStore

BankFactory = Callable[..., MemoryBank]


@pytest.fixture
def sessions(database: Database) -> SessionStore:
    return SessionStore(database)


@pytest.fixture(params=["sqlite", "chroma"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every vector search test runs on both backends: NumPy over the store, and Chroma."""
    return str(request.param)


@pytest.fixture
def make_bank(database: Database, tmp_path: Path, backend: str) -> BankFactory:
    """A bank over the test's store; semantic with an embedder, else keyword-only."""

    def make(embedder: Embedder | None = None) -> MemoryBank:
        settings = load_settings(
            config_file=_empty_config(tmp_path),
            data_dir=tmp_path / "data",
            memory_backend=backend,
            chroma_path=tmp_path / "chroma",
        )
        return memory_bank(settings, database, embedder)

    return make


def _empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.touch()
    return path
