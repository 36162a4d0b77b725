"""Grammar-constrained output and pooled embeddings, through the real engine."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
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
from hoshikage.engine.scheduler import EMBEDDING_BATCH_TOKENS, EMBEDDING_SEQUENCES
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


PASSAGE = (
    "rain falls on the quiet hills while an old ferry crosses the river and the town "
    "wakes to bread, gulls and the sound of bells"
)
WORDS = PASSAGE.split()


def mixed_texts(count: int, longest_words: int) -> list[str]:
    """Distinct texts: short sentences between paragraphs of many different lengths."""
    texts = []
    for index in range(count):
        if index % 3 == 0:
            texts.append(f"Note {index}: the {WORDS[index % len(WORDS)]} is here.")
        else:
            n_words = 8 + (index * 37) % longest_words
            texts.append(" ".join(WORDS[(index + k) % len(WORDS)] for k in range(n_words)))
    return texts


def as_matrix(vectors: list[list[float]]) -> npt.NDArray[np.float64]:
    return np.asarray(vectors, dtype=np.float64)


# How close an input's vector in a packed decode is to its vector alone. Not identical: for
# bigger batches llama.cpp's CPU kernels take other paths (tiled F32 flash attention instead
# of an F16 accumulator, other matrix product kernels), which moves MiniLM's vectors by up to
# about 2.5e-4 (its vectors alone with flash attention on and off differ as much). Mixed-up
# inputs or wrong positions show far more: two different texts here are at most 0.996 alike.
SAME_VECTOR = 0.999


def test_many_inputs_give_what_each_gives_alone(minilm: Engine) -> None:
    texts = mixed_texts(40, longest_words=300)
    n_tokens = [len(minilm.model.tokenize(text)) for text in texts]
    assert min(n_tokens) < 20 and max(n_tokens) > 250  # mixed lengths, all within the window
    together = as_matrix(minilm.embed(texts).result(timeout=60).vectors)
    alone = as_matrix([minilm.embed([text]).result(timeout=30).vectors[0] for text in texts])
    assert together.shape == (40, 384)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-4)
    similarity = together @ alone.T
    assert np.diagonal(similarity).min() >= SAME_VECTOR
    # Input order is kept: each vector is nearest to its own text's vector alone.
    assert (similarity.argmax(axis=1) == np.arange(40)).all()


def test_inputs_share_decodes(minilm: Engine) -> None:
    scheduler = minilm.scheduler
    short = [f"Sentence {i} is short." for i in range(40)]
    longest = max(len(minilm.model.tokenize(text)) for text in short)
    assert longest * EMBEDDING_SEQUENCES <= EMBEDDING_BATCH_TOKENS  # a full set fits a decode
    before = scheduler.embedding_decodes
    minilm.embed(short).result(timeout=60)
    assert scheduler.embedding_decodes - before == math.ceil(40 / EMBEDDING_SEQUENCES)
    # Longer inputs fill a decode by tokens: of six just over a third of the budget each,
    # two share a decode.
    tokens = minilm.model.tokenize(" ".join(WORDS * 20))[: EMBEDDING_BATCH_TOKENS // 3 + 1]
    before = scheduler.embedding_decodes
    result = scheduler.submit_embedding([tokens] * 6).result(timeout=60)
    assert scheduler.embedding_decodes - before == 3
    assert result.prompt_tokens == 6 * len(tokens)


def test_queued_requests_share_decodes(minilm: Engine) -> None:
    scheduler = minilm.scheduler
    long_inputs = [" ".join(WORDS[i:] * 12) for i in range(4)]
    n_tokens = [len(minilm.model.tokenize(text)) for text in long_inputs]
    assert EMBEDDING_BATCH_TOKENS // 2 < min(n_tokens) <= max(n_tokens) <= minilm.n_ctx
    singles = [f"Request {i} wants one vector." for i in range(8)]
    expected = as_matrix([minilm.embed([text]).result(timeout=30).vectors[0] for text in singles])
    before = scheduler.embedding_decodes
    first = minilm.embed(long_inputs)
    # These queue while the first request is served (a decode for each of its inputs), and
    # are then served together: one decode, not eight.
    futures = [minilm.embed([text]) for text in singles]
    bad = scheduler.submit_embedding([[]])  # (no text tokenises to nothing here)
    assert len(first.result(timeout=60).vectors) == 4
    got = as_matrix([future.result(timeout=60).vectors[0] for future in futures])
    with pytest.raises(EngineError, match="empty"):
        bad.result(timeout=60)
    assert scheduler.embedding_decodes - before <= len(long_inputs) + 1
    assert np.diagonal(got @ expected.T).min() >= SAME_VECTOR


@pytest.fixture(scope="module")
def stories_embedder(stories_model: Path) -> Iterator[Engine]:
    """stories260K as an embedding model: causal, with a KV cache and no pooling of its own."""
    with Engine(stories_model, LoadOptions(n_ctx=512, embedding=True)) as engine:
        yield engine


def test_a_decoder_model_embeds_inputs_together_as_alone(stories_embedder: Engine) -> None:
    # Inputs share one KV cache: each needs its own sequence, or they attend to each other.
    texts = mixed_texts(24, longest_words=120)
    before = stories_embedder.scheduler.embedding_decodes
    together = as_matrix(stories_embedder.embed(texts).result(timeout=60).vectors)
    assert stories_embedder.scheduler.embedding_decodes - before < len(texts) // 2
    alone = as_matrix(
        [stories_embedder.embed([text]).result(timeout=30).vectors[0] for text in texts]
    )
    similarity = together @ alone.T
    assert np.diagonal(similarity).min() >= 0.9999
    assert (similarity.argmax(axis=1) == np.arange(len(texts))).all()


def test_memory_estimate_counts_weights_and_kv(stories_model: Path) -> None:
    small = estimate_memory_bytes(stories_model, 256)
    large = estimate_memory_bytes(stories_model, 2048)
    assert small > stories_model.stat().st_size
    # 5 layers x 4 KV heads x (8 + 8) dims x 2 bytes per token, plus a 10% margin.
    assert large - small == pytest.approx((2048 - 256) * 5 * 4 * 16 * 2 * 1.1, rel=0.01)
