"""Llama 3.2 / Llama 4 pythonic calls: `[f(a=1), g()]`, read with `ast`, never evaluated."""

from __future__ import annotations

import re

import pytest

from hoshikage.toolformats.pythonic import PythonicFormat, parse_call, python_literal
from tests.toolformats.grammars import GrammarChecker
from tests.toolformats.helpers import TOOLS, Answer, match_start, parse, parse_every_way, round_trip

FORMAT = PythonicFormat()

# Llama 4's answer as vLLM's tests write it, and the Llama 3.2 model card's example types.
LLAMA4 = (
    "<|python_start|>[get_weather(city='LA', unit='celsius'),"
    "search(query='Doe', tags=['a'])]<|python_end|>"
)
TYPES = (
    "[register_user(name='John Doe', age=37, address={'city': 'San Francisco'}, "
    "role=None, passed_test=True, aliases=('John', 'Johnny'), score=-1.5e3)]"
)


def test_llama4_calls_however_split() -> None:
    assert parse_every_way(FORMAT, LLAMA4) == Answer(
        "",
        (
            ("get_weather", {"city": "LA", "unit": "celsius"}),
            ("search", {"query": "Doe", "tags": ["a"]}),
        ),
    )


def test_python_literals_become_json() -> None:
    ((name, arguments),) = parse_every_way(FORMAT, TYPES).calls
    assert name == "register_user"
    assert arguments == {
        "name": "John Doe",
        "age": 37,
        "address": {"city": "San Francisco"},
        "role": None,
        "passed_test": True,
        "aliases": ["John", "Johnny"],
        "score": -1500.0,
    }


def test_strings_with_brackets_quotes_and_triple_quotes() -> None:
    text = "[search(query='Martha\\'s ) Vineyard', tags=[\"]\", '''a ' b''', \"\"\"c\"\"\"])]"
    assert parse_every_way(FORMAT, text).calls == (
        ("search", {"query": "Martha's ) Vineyard", "tags": ["]", "a ' b", "c"]}),
    )


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2, 3] are numbers",
        "[Note] this is text",
        "Text first [get_time()]",
        "[get_time(open('/etc/passwd'))]",  # positional, not a literal
        "[get_time(x=__import__('os'))]",  # never evaluated: text
        "[get_time(**kw)]",
    ],
)
def test_what_is_not_a_literal_call_is_text(text: str) -> None:
    assert parse_every_way(FORMAT, text) == Answer(text, ())


def test_a_bad_call_after_a_good_one_is_text_after_it() -> None:
    answer = parse_every_way(FORMAT, "[get_time(), get_weather(city=x)]")
    assert answer == Answer(", get_weather(city=x)]", (("get_time", {}),))


def test_cut_off_calls_are_text() -> None:
    cut = "[get_weather(city='Par"
    assert parse(FORMAT, [cut]) == Answer(cut, ())


def test_parse_call_refuses_what_json_cannot_hold() -> None:
    assert parse_call("f(x=b'bytes')") is None
    assert parse_call("f(x=1e999)") is None
    assert parse_call("f(x={1, 2})") is None
    assert parse_call("f(x=1j)") is None
    assert parse_call("a.b(x=true, y=null)") == ("a.b", '{"x": true, "y": null}')


def test_call_text_writes_python_and_reads_back() -> None:
    assert python_literal({"a": [True, None, 1.5, "x"]}) == '{"a": [True, None, 1.5, "x"]}'
    round_trip(FORMAT, [("search", {"query": "q", "strict": False}), ("get_time", {})])


def test_triggers() -> None:
    start, tag = FORMAT.triggers()
    assert match_start(start, LLAMA4) == 0
    assert re.search(tag, " [get_time()]") is not None
    assert re.search(tag, "see [get_time()]") is None


def test_grammar(checker: GrammarChecker) -> None:
    many = FORMAT.grammar(TOOLS, parallel=True, required=True)
    one = FORMAT.grammar(TOOLS, parallel=False, required=True)
    # Keywords in the schema's order (as the JSON Schema converter orders objects' keys).
    good = '[get_weather(city="Paris", days=2), search(query="q", tags=["a"], strict=True)]'
    assert checker.accepts(many, good)
    assert checker.accepts(many, "<|python_start|>[get_time()]<|python_end|>")
    assert not checker.accepts(one, good)
    assert checker.accepts(one, '[get_weather(city="Paris")]')
    assert not checker.accepts(one, "[get_weather(days=2)]")  # city is required
    assert not checker.accepts(one, '[get_weather(city="Paris", strict=true)]')
    assert not checker.accepts(one, '[search(query="q", strict=true)]')  # Python writes True
    # What the grammar lets through, the parser reads.
    read = parse(FORMAT, [good]).calls[1]
    assert read == ("search", {"query": "q", "tags": ["a"], "strict": True})


def test_system_prompt() -> None:
    assert "[func_name1(param_name1=value1" in FORMAT.system_prompt(TOOLS)
