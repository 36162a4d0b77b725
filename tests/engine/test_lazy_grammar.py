"""Lazy grammars and grammar sampling through the real engine and real trained models."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hoshikage.engine import ChatMessage, Engine, LoadOptions, SamplingParams, sampling
from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
}


def after_marker(marker: str, schema: dict[str, Any]) -> str:
    """GBNF for `marker` then a JSON document of `schema`: a tool format's lazy grammar."""
    document = re.sub(r"^root ::=", "document ::=", json_schema_grammar(schema), flags=re.M)
    return f'root ::= "{marker}" document\n{document}'


@pytest.fixture(scope="module")
def smollm2(shared_models: Path) -> Iterator[Engine]:
    path = shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with Engine(path, LoadOptions(n_ctx=1024)) as engine:
        yield engine


def greedy(engine: Engine, prompt: str, **options: Any) -> tuple[str, str]:
    generation = engine.complete(prompt, SamplingParams(temperature=0.0, **options))
    reason = generation.wait().finish_reason
    return generation.text, reason


def test_text_before_the_trigger_is_free_and_the_grammar_follows_it(
    stories_engine: Engine,
) -> None:
    free, _ = greedy(stories_engine, "Once upon a time", max_tokens=80)
    assert "Lily" in free  # "…there was a little girl named Lily. She…"
    text, reason = greedy(
        stories_engine,
        "Once upon a time",
        max_tokens=80,
        grammar='root ::= "Lily" [0-9]{3}',
        grammar_triggers=("Lily",),
    )
    before = free[: free.index("Lily")]
    assert re.fullmatch(re.escape(before) + "Lily[0-9]{3}", text), text
    assert reason == "stop"  # the grammar finished: only end-of-generation could follow


def test_a_tag_marker_starts_a_json_document_in_a_chat(smollm2: Engine) -> None:
    # SmolLM2 writes "`<div>`" here, the last as the token ">`": a marker whose token carries
    # more text. llama.cpp's lazy grammar aborts the process replaying ">`" (not JSON); here
    # that token is refused, so ">" is written and the document follows.
    messages = [ChatMessage("user", "What is an HTML tag? Give an example like <div>.")]
    free = smollm2.chat(messages, SamplingParams(temperature=0.0, max_tokens=60))
    free.wait()
    assert "`<div>`" in free.text
    generation = smollm2.chat(
        messages,
        SamplingParams(
            temperature=0.0,
            max_tokens=80,
            grammar=after_marker("<div>", CITY),
            grammar_triggers=("<div>",),
        ),
    )
    assert generation.wait().finish_reason == "stop"
    before, _, call = generation.text.partition("<div>")
    assert before == free.text[: free.text.index("<div>")]
    assert set(json.loads(call)) == {"city"}


def test_a_trigger_whose_text_breaks_the_grammar_is_never_written(stories_engine: Engine) -> None:
    text, _ = greedy(
        stories_engine,
        "Once upon a time",
        max_tokens=60,
        grammar='root ::= "Lilx"',
        grammar_triggers=("Lily",),
    )
    assert "Lily" not in text
    assert text.startswith(", there was a little girl named")


def test_a_finished_grammar_ends_the_answer_even_with_ignore_eos(stories_engine: Engine) -> None:
    text, reason = greedy(
        stories_engine,
        "Once upon a time",
        max_tokens=20,
        ignore_eos=True,
        grammar="root ::= [a-z]{3}",
    )
    assert re.fullmatch("[a-z]{3}", text)
    assert reason == "stop"


GRAMMARS = {
    "json object": (JSON_OBJECT_GBNF, ()),
    "json schema": (json_schema_grammar(PERSON), ()),
    "lazy": ('root ::= "Lily" " "? [A-Z] [a-z]+ "."', ("Lily",)),
}


@pytest.mark.parametrize("name", list(GRAMMARS))
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_old_grammar_first_path_gives_the_same_answer(
    stories_engine: Engine, monkeypatch: pytest.MonkeyPatch, name: str, temperature: float
) -> None:
    grammar, triggers = GRAMMARS[name]
    params = SamplingParams(
        temperature=temperature,
        seed=3,
        max_tokens=60,
        grammar=grammar,
        grammar_triggers=triggers,
    )
    answers = []
    for grammar_first in (False, True):
        monkeypatch.setattr(sampling, "_GRAMMAR_FIRST", grammar_first)
        generation = stories_engine.complete("Once upon a time", params)
        reason = generation.wait().finish_reason
        answers.append((generation.text, reason))
    assert answers[0] == answers[1]
