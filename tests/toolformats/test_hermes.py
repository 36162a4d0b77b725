"""Hermes / Qwen 2.5 / Qwen 3: `<tool_call>` blocks of JSON, as the models write them."""

from __future__ import annotations

from hoshikage.toolformats.hermes import HermesFormat
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

FORMAT = HermesFormat()

# Qwen2.5-7B-Instruct's answer to "weather in Paris and the time?", as its template primes it.
QWEN_PARALLEL = (
    "I'll look both up.\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_time", "arguments": {}}\n'
    "</tool_call>"
)


def test_parallel_calls_after_text_read_the_same_however_split() -> None:
    answer = parse_every_way(FORMAT, QWEN_PARALLEL)
    assert answer == Answer(
        "I'll look both up.\n",
        (("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {})),
    )


def test_arguments_stream_as_they_arrive() -> None:
    parser = FORMAT.parser(TOOLS)
    assert parser.feed('<tool_call>\n{"name": "search", "arguments": {"query": "cats') != []
    # The name is known and the arguments began: the call and what arrived are passed on.
    more = parser.feed(' and dogs"}}\n</tool_call>')
    assert any(getattr(piece, "text", "").startswith(" and dogs") for piece in more)


def test_key_order_strings_and_qwen3_thinking_are_handled() -> None:
    text = (
        "<think>\nThe user wants a search.\n</think>\n\n"
        "<tool_call>\n"
        '{"arguments": "{\\"query\\": \\"q\\", \\"tags\\": [\\"a\\"]}", "name": "search"}\n'
        "</tool_call>"
    )
    answer = parse_every_way(FORMAT, text)
    assert answer.text == "<think>\nThe user wants a search.\n</think>\n\n"
    assert answer.calls == (("search", {"query": "q", "tags": ["a"]}),)


def test_marker_lookalikes_are_text_and_nothing_is_lost() -> None:
    for text in (
        "<tools are great",
        "Use <tool_call> tags like this.",
        "<tool_call>\nnot json at all\n</tool_call>",
        'A <tool_call>{"name": 3}</tool_call>',
    ):
        assert parse_every_way(FORMAT, text) == Answer(text, ()), text
    text_streams_at_once(FORMAT, "Plain text with a < and <b>tags</b> streams at once.")


def test_an_answer_cut_off_mid_call() -> None:
    # Before the name is known nothing was decided: it is text.
    assert parse(FORMAT, ['<tool_call>\n{"na']) == Answer('<tool_call>\n{"na', ())
    # Once the arguments began the call is kept, its arguments closed as valid JSON.
    cut = '<tool_call>\n{"name": "search", "arguments": {"query": "ca'
    assert parse_every_way(FORMAT, cut) == Answer("", (("search", {"query": "ca"}),))


def test_unknown_names_are_still_calls() -> None:
    text = '<tool_call>\n{"name": "launch", "arguments": {"x": 1}}\n</tool_call>'
    assert parse_every_way(FORMAT, text).calls == (("launch", {"x": 1}),)


def test_call_text_reads_back() -> None:
    round_trip(FORMAT, [("get_weather", {"city": "Oslo"}), ("get_time", {})])


def test_trigger_matches_the_marker() -> None:
    (trigger,) = FORMAT.triggers()
    assert match_start(trigger, QWEN_PARALLEL) == QWEN_PARALLEL.index("<tool_call>")


def test_grammar_accepts_calls_and_refuses_others(checker: GrammarChecker) -> None:
    one = FORMAT.grammar(TOOLS, parallel=False, required=True)
    many = FORMAT.grammar(TOOLS, parallel=True, required=False)
    calls = QWEN_PARALLEL[QWEN_PARALLEL.index("<tool_call>") :]
    assert checker.accepts(many, calls)
    assert not checker.accepts(one, calls)
    assert checker.accepts(one, "\n" + calls[: calls.index("</tool_call>") + 12])
    wrong_name = '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>'
    wrong_type = '<tool_call>\n{"name": "get_weather", "arguments": {"city": 3}}\n</tool_call>'
    missing = '<tool_call>\n{"name": "get_weather", "arguments": {"days": 2}}\n</tool_call>'
    for text in (wrong_name, wrong_type, missing, "Hello"):
        assert not checker.accepts(many, text), text


def test_system_prompt_lists_tools_and_the_syntax() -> None:
    prompt = FORMAT.system_prompt(TOOLS)
    assert '"name": "get_weather"' in prompt and '"maxLength": 24' in prompt
    assert "<tool_call>\n" in prompt and "</tool_call>" in prompt
