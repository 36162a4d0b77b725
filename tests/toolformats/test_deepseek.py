"""DeepSeek R1 / V3 (type, name, fenced JSON) and V3.1 (name, separator, JSON)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hoshikage.toolformats.deepseek import DeepSeekFormat
from tests.toolformats.grammars import GrammarChecker
from tests.toolformats.helpers import TOOLS, Answer, parse, parse_every_way, round_trip

R1 = DeepSeekFormat()
V3_1 = DeepSeekFormat(v3_1=True)

R1_ANSWER = (
    "<think>\nThe user asks for the weather.\n</think>\n\n"
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
    '```json\n{"city": "Hangzhou"}\n```<｜tool▁call▁end｜>\n'
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜>"
    "<｜tool▁calls▁end｜>"
)
V3_1_ANSWER = (
    "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
    '{"city": "Hangzhou"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}'
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)
CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("get_weather", {"city": "Hangzhou"}),
    ("get_time", {}),
)


@pytest.mark.parametrize("fmt", [R1, V3_1], ids=["r1", "v3.1"])
def test_one_parser_reads_both_forms_however_split(fmt: DeepSeekFormat) -> None:
    answer = parse_every_way(fmt, R1_ANSWER)
    assert answer == Answer("<think>\nThe user asks for the weather.\n</think>\n\n", CALLS)
    assert parse_every_way(fmt, V3_1_ANSWER) == Answer("Let me check.", CALLS)


def test_misspelt_openings_and_missing_markers() -> None:
    distill = (
        "<｜tool calls begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    )
    assert parse_every_way(R1, distill).calls == (("get_time", {}),)
    lone = '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "X"}<｜tool▁call▁end｜> ok'
    assert parse_every_way(V3_1, lone) == Answer("ok", (("get_weather", {"city": "X"}),))
    named_function = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>{"a": 1}'
    assert parse_every_way(V3_1, named_function).calls == (("function", {"a": 1}),)


def test_lookalikes_and_cut_off_answers() -> None:
    for text in ("<｜tool▁calls▁begin｜> nothing", "<｜User｜> is a marker", "<｜tool"):
        assert parse_every_way(R1, text) == Answer(text, ()), text
    head = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_we"
    assert parse(R1, [head]) == Answer(head, ())
    cut = (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>search<｜tool▁sep｜>"
        + '{"query": "a", "tags": ['
    )
    assert parse_every_way(V3_1, cut).calls == (("search", {"query": "a", "tags": []}),)


def test_call_text_reads_back() -> None:
    round_trip(R1, list(CALLS))
    round_trip(V3_1, list(CALLS))


def test_triggers_match_every_opening() -> None:
    for fmt in (R1, V3_1):
        for opening in ("<｜tool▁calls▁begin｜>", "<｜tool\\_calls\\_begin｜>", "<｜tool▁calls｜>"):
            assert any(re.search(trigger, "x " + opening) for trigger in fmt.triggers())


def test_grammars(checker: GrammarChecker) -> None:
    r1 = R1.grammar(TOOLS, parallel=True, required=True)
    body = R1_ANSWER[R1_ANSWER.index("<｜tool▁calls▁begin｜>") :]
    assert checker.accepts(r1, body)
    assert not checker.accepts(R1.grammar(TOOLS, parallel=False, required=True), body)
    assert not checker.accepts(r1, body.replace("get_time", "get_date"))
    v31 = V3_1.grammar(TOOLS, parallel=True, required=False)
    assert checker.accepts(v31, V3_1_ANSWER[len("Let me check.") :])
    assert not checker.accepts(v31, V3_1_ANSWER)  # a lazy grammar starts at the marker
    assert not checker.accepts(v31, body)


def test_system_prompts() -> None:
    assert "function<｜tool▁sep｜><function name>\n```json" in R1.system_prompt(TOOLS)
    assert "<｜tool▁call▁begin｜><function name><｜tool▁sep｜>{" in V3_1.system_prompt(TOOLS)
