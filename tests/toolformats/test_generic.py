"""The generic format: {"tool_calls": [...]} for models whose template knows no tools."""

from __future__ import annotations

from typing import Any

from hoshikage.toolformats.generic import GenericFormat, match_parts
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

FORMAT = GenericFormat()

LIST = (
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}, '
    '{"name": "get_time", "arguments": {}}]}'
)
CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("get_weather", {"city": "Lima"}),
    ("get_time", {}),
)


def test_the_list_however_split_and_with_text_before() -> None:
    assert parse_every_way(FORMAT, LIST) == Answer("", CALLS)
    assert parse_every_way(FORMAT, "Sure.\n" + LIST) == Answer("Sure.\n", CALLS)
    spaced = '{ "tool_calls" :\n [ {"name": "get_time", "arguments": {} } ] }'
    assert parse_every_way(FORMAT, spaced).calls == (("get_time", {}),)


def test_single_and_bare_calls_and_openai_shapes() -> None:
    single = '{"tool_call": {"name": "get_time", "arguments": {}}}'
    assert parse_every_way(FORMAT, single).calls == (("get_time", {}),)
    bare = '{"name": "get_weather", "arguments": {"city": "Lima"}}'
    assert parse_every_way(FORMAT, bare).calls == (CALLS[0],)
    openai = (
        '{"tool_calls": [{"id": "call_1", "type": "function", "function": '
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}}]}'
    )
    assert parse_every_way(FORMAT, openai).calls == (CALLS[0],)


def test_other_json_and_braces_are_text() -> None:
    for text in (
        'The config is {"debug": true}.',
        '{"name": "Ada", "born": 1815}',
        "fn main() { println!(); }",
        '{"tool_calls": "none"}',
        "{}",
    ):
        assert parse_every_way(FORMAT, text) == Answer(text, ()), text
    text_streams_at_once(FORMAT, "No JSON here, just words and a } or two.")


def test_cut_off() -> None:
    assert parse(FORMAT, ['{"tool_calls": [{"na']) == Answer('{"tool_calls": [{"na', ())
    cut = '{"tool_calls": [{"name": "search", "arguments": {"query": "lla'
    assert parse_every_way(FORMAT, cut).calls == (("search", {"query": "lla"}),)


def test_match_parts() -> None:
    assert match_parts('{ "a" :', ("{", '"a"', ":"), False) == ("yes", 7)
    assert match_parts('{ "a', ("{", '"a"', ":"), False) == ("wait", 0)
    assert match_parts('{ "a', ("{", '"a"', ":"), True) == ("no", 0)
    assert match_parts('{"b"', ("{", '"a"'), False) == ("no", 0)


def test_call_text_reads_back() -> None:
    round_trip(FORMAT, list(CALLS))


def test_trigger_and_grammar(checker: GrammarChecker) -> None:
    (trigger,) = FORMAT.triggers()
    assert match_start(trigger, "Sure.\n" + LIST) == 6
    many = FORMAT.grammar(TOOLS, parallel=True, required=True)
    one = FORMAT.grammar(TOOLS, parallel=False, required=False)
    assert checker.accepts(many, LIST)
    assert not checker.accepts(one, LIST)
    assert checker.accepts(one, '{"tool_calls": [{"name": "get_time", "arguments": {}}]}')
    assert not checker.accepts(one, '{"tool_calls": []}')
    assert not checker.accepts(many, '{"tool_calls": [{"name": "get_weather", "arguments": {}}]}')
    assert not checker.accepts(many, "Plain text")


def test_system_prompt_describes_tools_and_the_shape() -> None:
    prompt = FORMAT.system_prompt(TOOLS)
    assert '{"tool_calls": [{"name": "<function name>"' in prompt
    assert '"name": "search"' in prompt and "plain text" in prompt
