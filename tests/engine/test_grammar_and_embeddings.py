"""Grammar-constrained output and pooled embeddings, through the real engine."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.engine import (
    ChatMessage,
    ContextOverflowError,
    Engine,
    EngineError,
    LoadOptions,
    SamplingParams,
)
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.models.gguf_info import estimate_memory_bytes

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def minilm(shared_models: Path) -> Iterator[Engine]:
    path = shared_models / "all-MiniLM-L6-v2-q8_0.gguf"
    with Engine(path, LoadOptions(n_ctx=0, embedding=True)) as engine:
        yield engine


def test_json_schema_output_parses_and_fits_the_schema(stories_engine: Engine) -> None:
    params = SamplingParams(
        temperature=0.7, seed=2, max_tokens=80, grammar=json_schema_grammar(PERSON)
    )
    generation = stories_engine.chat([ChatMessage("user", "Lily")], params)
    assert generation.wait().finish_reason == "stop"
    document = json.loads(generation.text)
    assert set(document) == {"name", "age"}
    assert isinstance(document["name"], str) and len(document["name"]) <= 12
    assert isinstance(document["age"], int)


def test_json_object_output_starts_as_an_object(stories_engine: Engine) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=24, grammar=JSON_OBJECT_GBNF)
    generation = stories_engine.complete("Once upon a time", params)
    generation.wait()
    assert generation.text.lstrip().startswith("{")


def test_a_grammar_does_not_see_the_prompt(stories_engine: Engine) -> None:
    # The prompt is not JSON; were it fed to the grammar, nothing could be sampled after it.
    params = SamplingParams(
        temperature=0.0, max_tokens=60, repeat_penalty=1.3, grammar=json_schema_grammar(PERSON)
    )
    generation = stories_engine.complete("Once upon a time, there was", params)
    generation.wait()
    assert generation.text.lstrip().startswith("{")


def test_bad_grammar_and_bad_schema_are_engine_errors(stories_engine: Engine) -> None:
    with pytest.raises(EngineError):
        stories_engine.complete(
            "x", SamplingParams(max_tokens=2, grammar="root ::= ( unclosed")
        ).wait()
    with pytest.raises(EngineError, match="schema"):
        json_schema_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})


def test_embeddings_are_normalised_and_meaningful(minilm: Engine) -> None:
    texts = [
        "My cat is called Tama.",
        "What is the name of my cat?",
        "The stock market fell today.",
    ]
    result = minilm.embed(texts).result(timeout=30)
    assert len(result.vectors) == 3 and all(len(v) == 384 for v in result.vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-4) for v in result.vectors)
    cat, question, stocks = result.vectors

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(cat, question) == pytest.approx(0.73, abs=0.02)
    assert cosine(cat, stocks) == pytest.approx(0.01, abs=0.05)
    assert result.prompt_tokens > 10
    # The same text embeds the same whatever else is in the request.
    alone = minilm.embed([texts[1]]).result(timeout=30).vectors[0]
    assert alone == pytest.approx(question, abs=1e-5)


def test_embedding_limits_and_kinds(minilm: Engine, stories_engine: Engine) -> None:
    with pytest.raises(ContextOverflowError):
        minilm.embed(["word " * 2000]).result(timeout=30)
    with pytest.raises(EngineError, match="embedding model"):
        minilm.complete("hi", SamplingParams(max_tokens=2))
    with pytest.raises(EngineError, match="not loaded as an embedding model"):
        stories_engine.embed(["hi"])
    # The engine keeps serving after a failed input.
    assert len(minilm.embed(["still here"]).result(timeout=30).vectors) == 1


def test_memory_estimate_counts_weights_and_kv(stories_model: Path) -> None:
    small = estimate_memory_bytes(stories_model, 256)
    large = estimate_memory_bytes(stories_model, 2048)
    assert small > stories_model.stat().st_size
    # 5 layers x 4 KV heads x (8 + 8) dims x 2 bytes per token, plus a 10% margin.
    assert large - small == pytest.approx((2048 - 256) * 5 * 4 * 16 * 2 * 1.1, rel=0.01)
