"""Llama 3.x: a bare JSON object with "parameters", maybe after <|python_tag|>."""

from __future__ import annotations

import re

from hoshikage.toolformats.llama3 import Llama3JsonFormat
from tests.toolformats.grammars import GrammarChecker
from tests.toolformats.helpers import (
    TOOLS,
    Answer,
    match_start,
    parse,
    parse_every_way,
    round_trip,
    text_streams_at_once,
)

FORMAT = Llama3JsonFormat()

# Llama 3.1 8B's answer as its template asks for it, and as llama.cpp's tests write it.
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}'
PYTHON_TAG = '<|python_tag|>{"type": "function", "name": "get_time", "parameters": {}}'


def test_calls_at_the_start_however_split() -> None:
    assert parse_every_way(FORMAT, LLAMA) == Answer(
        "", (("get_weather", {"city": "Paris", "days": 3}),)
    )
    assert parse_every_way(FORMAT, PYTHON_TAG).calls == (("get_time", {}),)
    assert parse_every_way(FORMAT, "\n\n" + LLAMA).calls[0][0] == "get_weather"


def test_several_calls_separated_by_semicolons_or_lines() -> None:
    for separator in ("; ", "\n", ";\n"):
        answer = parse_every_way(FORMAT, LLAMA + separator + PYTHON_TAG[14:])
        assert [name for name, _ in answer.calls] == ["get_weather", "get_time"]
        assert answer.text == ""


def test_json_that_is_no_call_is_text() -> None:
    for text in (
        '{"name": "Bob", "age": 3}',  # data: no parameters
        'Here it is: {"name": "get_time", "parameters": {}}',  # not at the start
        "{not json}",
        '<|python_tag|>brave_search.call(query="x")',  # a built-in tool: left as text
    ):
        assert parse_every_way(FORMAT, text) == Answer(text, ()), text
    text_streams_at_once(FORMAT, "The answer is 42, and {braces} are fine later.")


def test_cut_off_calls() -> None:
    assert parse(FORMAT, ['{"name": "get_time", "param']) == Answer(
        '{"name": "get_time", "param', ()
    )
    answer = parse_every_way(FORMAT, '{"name": "search", "parameters": {"query": "a\\u00e')
    assert answer.calls == (("search", {"query": "a"}),)


def test_call_text_reads_back() -> None:
    round_trip(FORMAT, [("get_weather", {"city": "Rome"}), ("search", {"query": "q"})])


def test_triggers() -> None:
    tag, start = FORMAT.triggers()
    assert match_start(tag, PYTHON_TAG) == 0
    assert re.search(start, "  " + LLAMA) is not None
    assert re.search(start, "Text first " + LLAMA) is None


def test_grammar(checker: GrammarChecker) -> None:
    one = FORMAT.grammar(TOOLS, parallel=False, required=True)
    many = FORMAT.grammar(TOOLS, parallel=True, required=True)
    assert checker.accepts(one, LLAMA)
    assert checker.accepts(one, PYTHON_TAG)
    assert checker.accepts(many, LLAMA + "; " + PYTHON_TAG[14:])
    assert not checker.accepts(one, LLAMA + "; " + PYTHON_TAG[14:])
    wrong = '{"name": "get_weather", "parameters": {"city": "Paris", "days": "two"}}'
    assert not checker.accepts(one, wrong)
    assert not checker.accepts(one, '{"name": "get_weather", "arguments": {"city": "Paris"}}')


def test_system_prompt() -> None:
    assert '"parameters": {<arguments' in FORMAT.system_prompt(TOOLS)
