"""Tool-format fixtures: a real vocabulary for llama.cpp's grammar parser, real templates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.engine.model import LlamaModel
from tests.toolformats.grammars import GrammarChecker

TEMPLATES = Path(__file__).resolve().parent / "templates"


@pytest.fixture(scope="session")
def smollm2_path(shared_models: Path) -> Path:
    return shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def vocab_model(smollm2_path: Path) -> Iterator[LlamaModel]:
    """SmolLM2's vocabulary alone (byte-level BPE: every byte is a token)."""
    model = LlamaModel(smollm2_path, vocab_only=True)
    yield model
    model.close()


@pytest.fixture(scope="session")
def checker(vocab_model: LlamaModel) -> GrammarChecker:
    return GrammarChecker(vocab_model)


def template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")
