"""Engine fixtures: models built or loaded once per session, since loading is the slow part."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.engine import Engine, LoadOptions
from hoshikage.models.synthetic import build_tiny_chat_model


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random llama with a byte vocabulary and a ChatML template (gibberish output)."""
    return build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny-chat.gguf")


@pytest.fixture(scope="session")
def stories_engine(stories_model: Path) -> Iterator[Engine]:
    """The real trained stories260K model, shared: tests must not assume an empty KV cache."""
    engine = Engine(stories_model, LoadOptions(n_ctx=512))
    yield engine
    engine.close()
