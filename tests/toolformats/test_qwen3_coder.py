"""Qwen3-Coder's XML calls: one tag per parameter, values typed by the tool's schema."""

from __future__ import annotations

import pytest

from hoshikage.toolformats.qwen3_coder import Qwen3CoderFormat, convert
from tests.toolformats.grammars import GrammarChecker
from tests.toolformats.helpers import TOOLS, Answer, match_start, parse, parse_every_way, round_trip

FORMAT = Qwen3CoderFormat()

CODER = (
    "I'll search, then check the weather.\n"
    "<tool_call>\n<function=search>\n"
    "<parameter=query>\nrust async\nruntimes\n</parameter>\n"
    '<parameter=tags>\n["rust", "async"]\n</parameter>\n'
    "<parameter=strict>\nTrue\n</parameter>\n"
    "<parameter=filters>\n{'site': 'docs.rs'}\n</parameter>\n"
    "</function>\n</tool_call>\n"
    "<tool_call>\n<function=get_weather>\n"
    "<parameter=city>\n42\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
    "</function>\n</tool_call>"
)


def test_calls_with_typed_values_however_split() -> None:
    answer = parse_every_way(FORMAT, CODER)
    assert answer.text == "I'll search, then check the weather.\n"
    assert answer.calls == (
        (
            "search",
            {
                "query": "rust async\nruntimes",
                "tags": ["rust", "async"],
                "strict": True,
                "filters": {"site": "docs.rs"},
            },
        ),
        ("get_weather", {"city": "42", "days": 3}),  # city is a string: it stays one
    )


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        ("3", {"type": "integer"}, 3),
        ("three", {"type": "integer"}, "three"),  # not its type: left as text
        ("2.5", {"type": "number"}, 2.5),
        ("false", {"type": "boolean"}, False),
        ("null", {"type": ["string", "null"]}, None),
        ("None", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
        ("None", {"type": "string"}, "None"),
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ("[1, 2]", None, "[1, 2]"),  # a parameter the schema does not know: text
        (" padded ", {"type": "string"}, " padded "),
    ],
)
def test_convert(value: str, schema: object, expected: object) -> None:
    assert convert(value, schema) == expected


def test_lenient_forms_and_lookalikes() -> None:
    # No <tool_call> around the function, no </function> before </tool_call>.
    bare = "<function=get_time>\n</function>"
    assert parse_every_way(FORMAT, bare).calls == (("get_time", {}),)
    unclosed = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n</tool_call>"
    )
    assert parse_every_way(FORMAT, unclosed).calls == (("get_weather", {"city": "Rome"}),)
    for text in ("<tools are great", "<tool_call> is a tag", "<function=\nbroken"):
        assert parse_every_way(FORMAT, text) == Answer(text, ()), text


def test_cut_off_call_keeps_what_arrived() -> None:
    cut = "<tool_call>\n<function=search>\n<parameter=query>\ncats and"
    assert parse(FORMAT, [cut]).calls == (("search", {"query": "cats and"}),)
    assert parse(FORMAT, ["<tool_call>\n<function=sea"]) == Answer("<tool_call>\n<function=sea", ())


def test_call_text_reads_back() -> None:
    round_trip(
        FORMAT, [("search", {"query": "a\nb", "tags": ["x"], "strict": True}), ("get_time", {})]
    )


def test_trigger() -> None:
    (trigger,) = FORMAT.triggers()
    assert match_start(trigger, CODER) == CODER.index("<tool_call>")


def test_grammar(checker: GrammarChecker) -> None:
    many = FORMAT.grammar(TOOLS, parallel=True, required=False)
    one = FORMAT.grammar(TOOLS, parallel=False, required=True)
    good = (
        "<tool_call>\n<function=search>\n<parameter=query>\nsee </div> and\nlines\n</parameter>\n"
        '<parameter=tags>\n["a"]\n</parameter>\n</function>\n</tool_call>'
    )
    assert checker.accepts(one, good)
    assert checker.accepts(many, good + "\n" + good)
    assert not checker.accepts(one, good + "\n" + good)

    def weather(*parameters: tuple[str, str]) -> str:
        tags = "".join(f"<parameter={name}>\n{value}\n</parameter>\n" for name, value in parameters)
        return f"<tool_call>\n<function=get_weather>\n{tags}</function>\n</tool_call>"

    assert checker.accepts(one, weather(("city", "x"), ("days", "2")))
    missing = weather(("days", "2"))
    wrong = weather(("city", "x"), ("days", "two"))
    enum = weather(("city", "x"), ("unit", "kelvin"))
    too_long = weather(("city", "x" * 25))  # maxLength 24
    for text in (missing, wrong, enum, too_long):
        assert not checker.accepts(one, text), text
    assert parse(FORMAT, [good]).calls == (
        ("search", {"query": "see </div> and\nlines", "tags": ["a"]}),
    )


def test_system_prompt() -> None:
    prompt = FORMAT.system_prompt(TOOLS)
    assert "<function=example_function_name>" in prompt and '"get_weather"' in prompt


def test_a_long_value_streamed_in_small_pieces() -> None:
    body = "".join(f"line {n} </div> <parameter\n" for n in range(400))
    text = f"<tool_call>\n<function=search>\n<parameter=query>\n{body}\n</parameter>\n</function>"
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    assert parse(FORMAT, chunks).calls == (("search", {"query": body}),)
