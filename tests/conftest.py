"""Shared fixtures: where the real model files are, and an isolated user environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.engine import LoadOptions
from hoshikage.memory.embedder import EngineEmbedder
from hoshikage.store import Database

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = PROJECT_ROOT.parent / "shared" / "models"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not SHARED_MODELS.is_dir():
        pytest.fail(f"the shared model files are missing: expected them in {SHARED_MODELS}")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def stories_model(shared_models: Path) -> Path:
    """A real trained 260K llama (no chat template): greedy 'Once upon a time' tells a story."""
    return shared_models / "stories260K.gguf"


@pytest.fixture(scope="session")
def minilm_path(shared_models: Path) -> Path:
    """A real embedding model: all-MiniLM-L6-v2 (BERT, 384 dimensions), Q8_0."""
    return shared_models / "all-MiniLM-L6-v2-q8_0.gguf"


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> Iterator[EngineEmbedder]:
    """MiniLM run by Hoshikage's engine, loaded once for the whole session."""
    embedder = EngineEmbedder(minilm_path, LoadOptions(n_threads=1))
    yield embedder
    embedder.close()


@pytest.fixture(scope="session")
def vocab_dir(shared_models: Path) -> Path:
    """Tokenizer-only GGUFs with real chat templates (qwen2: ChatML, phi-3, llama-spm: none)."""
    return shared_models / "vocab"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A fresh store in the test's own folder."""
    database = Database(tmp_path / "hoshikage.db")
    yield database
    database.close()


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No HOSHIKAGE_* variables from the host; data, logs and config under tmp_path."""
    import os

    for key in list(os.environ):
        if key.startswith("HOSHIKAGE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOSHIKAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOSHIKAGE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HOSHIKAGE_CONFIG_FILE", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    yield tmp_path
