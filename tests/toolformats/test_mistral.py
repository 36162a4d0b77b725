"""Mistral: `[TOOL_CALLS]` and a JSON array (Nemo, 7B v0.3), or `name[ARGS]{...}` (v11+)."""

from __future__ import annotations

from typing import Any

import pytest

from hoshikage.toolformats.mistral import MistralFormat
from tests.toolformats.grammars import GrammarChecker
from tests.toolformats.helpers import TOOLS, Answer, match_start, parse, parse_every_way, round_trip

ARRAY = MistralFormat()
V11 = MistralFormat(v11=True)

NEMO = (
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1B2c3D4e"}, '
    '{"name": "get_time", "arguments": {}, "id": "Zz9Yy8Xx7"}]'
)
SMALL_3_2 = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2}[TOOL_CALLS]get_time[ARGS]{}'
BOTH_CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("get_weather", {"city": "Paris"}),
    ("get_time", {}),
)


@pytest.mark.parametrize("fmt", [ARRAY, V11], ids=["array", "v11"])
def test_either_parser_reads_both_forms(fmt: MistralFormat) -> None:
    assert parse_every_way(fmt, NEMO) == Answer("", BOTH_CALLS)
    answer = parse_every_way(fmt, SMALL_3_2)
    assert answer.calls == (("get_weather", {"city": "Paris", "days": 2}), ("get_time", {}))


def test_v11_variants_call_ids_and_markers_detokenized_to_nothing() -> None:
    with_id = '[TOOL_CALLS]get_time[CALL_ID]abc123XYZ[ARGS]{"zone": "UTC"}'
    assert parse_every_way(V11, with_id).calls == (("get_time", {"zone": "UTC"}),)
    # vLLM's cases: [ARGS] lost as a control token, and text with braces before the call.
    bare = 'hi{hi[TOOL_CALLS]bash{"command": "print(\\"hello\\")\\nre.compile(r\'{}\')"}'
    answer = parse_every_way(V11, bare)
    assert answer.text == "hi{hi"
    assert answer.calls == (("bash", {"command": "print(\"hello\")\nre.compile(r'{}')"}),)


def test_text_before_and_lookalikes() -> None:
    answer = parse_every_way(ARRAY, "Checking now. " + NEMO)
    assert answer == Answer("Checking now. ", BOTH_CALLS)
    for text in ("[TOOL] is a tag", "[TOOL_CALLS] is a marker", "[TOOL_CALLS][1, 2]"):
        assert parse_every_way(V11, text) == Answer(text, ()), text


def test_cut_off_answers() -> None:
    assert parse(V11, ["[TOOL_CALLS]get_wea"]) == Answer("[TOOL_CALLS]get_wea", ())
    cut = '[TOOL_CALLS]search[ARGS]{"query": "x", "tags": ["a'
    assert parse_every_way(V11, cut).calls == (("search", {"query": "x", "tags": ["a"]}),)
    cut = '[TOOL_CALLS][{"name": "get_time", "arguments": {}}, {"name": "sea'
    assert parse_every_way(ARRAY, cut).calls == (("get_time", {}),)


def test_call_text_reads_back() -> None:
    round_trip(ARRAY, list(BOTH_CALLS))
    round_trip(V11, list(BOTH_CALLS))


def test_triggers() -> None:
    (trigger,) = ARRAY.triggers()
    assert match_start(trigger, "So: " + SMALL_3_2) == 4


def test_grammars(checker: GrammarChecker) -> None:
    many = ARRAY.grammar(TOOLS, parallel=True, required=True)
    assert checker.accepts(many, NEMO)
    assert checker.accepts(many, '[TOOL_CALLS][{"name": "get_time", "arguments": {}}]')
    assert not checker.accepts(ARRAY.grammar(TOOLS, parallel=False, required=True), NEMO)
    assert not checker.accepts(many, '[TOOL_CALLS][{"name": "nope", "arguments": {}}]')
    v11 = V11.grammar(TOOLS, parallel=True, required=False)
    assert checker.accepts(v11, SMALL_3_2)
    assert checker.accepts(v11, "[TOOL_CALLS]get_time[CALL_ID]abc123XYZ[ARGS]{}")
    assert not checker.accepts(v11, '[TOOL_CALLS]get_weather[ARGS]{"days": 2}')
    assert not checker.accepts(V11.grammar(TOOLS, parallel=False, required=False), SMALL_3_2)


def test_system_prompts_show_each_syntax() -> None:
    assert "[TOOL_CALLS][{" in ARRAY.system_prompt(TOOLS)
    assert "[TOOL_CALLS]<function name>[ARGS]{" in V11.system_prompt(TOOLS)
