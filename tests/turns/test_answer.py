"""An answer's text read into the turn's events: thinking, text and numbered calls."""

from __future__ import annotations

import itertools
import json

import pytest

from hoshikage.engine import ToolSpec
from hoshikage.toolformats.registry import format_named
from hoshikage.turns.answer import AnswerParser
from hoshikage.turns.reasoning import ReasoningSplitter
from hoshikage.turns.vocabulary import (
    AnswerEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
)

WEATHER = ToolSpec(
    "get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}}
)
ANSWER = (
    "<think>\nThe user wants two cities.\n</think>\n\n"
    "Let me look.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
)


def parser() -> AnswerParser:
    counter = itertools.count()
    return AnswerParser(
        splitter=ReasoningSplitter(),
        tool_parser=format_named("hermes").parser([WEATHER]),
        new_id=lambda: f"call_{next(counter)}",
    )


def read(pieces: list[str]) -> tuple[AnswerParser, list[AnswerEvent]]:
    answer = parser()
    events = [event for piece in pieces for event in answer.feed(piece)]
    return answer, events + answer.finish()


@pytest.mark.parametrize("cut", range(0, len(ANSWER), 7))
def test_reasoning_text_and_calls_at_any_split(cut: int) -> None:
    answer, events = read([ANSWER[:cut], ANSWER[cut:]])
    assert answer.reasoning == "The user wants two cities.\n"
    assert answer.text == "Let me look."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in answer.calls] == [
        ("call_0", "get_weather", {"city": "Paris"}),
        ("call_1", "get_weather", {"city": "Oslo"}),
    ]
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [(e.index, e.id, e.name) for e in started] == [
        (0, "call_0", "get_weather"),
        (1, "call_1", "get_weather"),
    ]
    for index, call in enumerate(answer.calls):
        pieces = [e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == index]
        assert "".join(pieces) == call.arguments
    ended = [e.call for e in events if isinstance(e, ToolCallEnded)]
    assert ended == answer.calls
    # the order of a stream: thinking, then text, then each call begun, argued, ended
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("TextDelta") > max(i for i, k in enumerate(kinds) if k == "ReasoningDelta")
    assert kinds.index("ToolCallStarted") > max(i for i, k in enumerate(kinds) if k == "TextDelta")


def test_character_by_character_the_same() -> None:
    whole, _ = read([ANSWER])
    split, _ = read(list(ANSWER))
    assert (split.text, split.reasoning, split.calls) == (whole.text, whole.reasoning, whole.calls)


def test_whitespace_beside_calls_is_not_text() -> None:
    answer, events = read(
        ['\n\n<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>\n\n']
    )
    assert answer.text == ""
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert answer.calls[0].arguments == "{}"


def test_whitespace_inside_plain_text_is_kept() -> None:
    answer, events = read(["Hello", " ", "\n", "world", "\n"])
    assert answer.text == "Hello \nworld\n"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == answer.text


def test_without_tools_or_thinking_text_is_text() -> None:
    plain = AnswerParser()
    events = plain.feed("<think>not parsed</think>") + plain.finish()
    assert plain.text == "<think>not parsed</think>"
    assert not [e for e in events if isinstance(e, ReasoningDelta)]


def test_a_call_cut_short_loses_no_text() -> None:
    answer, _ = read(['Sure. <tool_call>\n{"name": "get_wea'])
    assert not answer.calls
    assert answer.text.startswith("Sure.")
    assert "get_wea" in answer.text
