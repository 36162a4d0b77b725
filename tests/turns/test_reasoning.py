"""Thinking split from the answer, whole and at every split of the stream."""

from __future__ import annotations

import pytest

from hoshikage.turns.reasoning import (
    BRACKET_THINK_TAGS,
    THINK_TAGS,
    ReasoningSplitter,
    opens_thinking,
    thinking_tags_of,
)
from hoshikage.turns.vocabulary import ReasoningDelta, TextDelta


def split(pieces: list[str], **options: object) -> tuple[str, str]:
    splitter = ReasoningSplitter(**options)  # type: ignore[arg-type]
    events = [event for piece in pieces for event in splitter.feed(piece)]
    events += splitter.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, text


ANSWERS = [
    ("<think>\nLet me add 2 and 2.\n</think>\n\nIt is 4.", "Let me add 2 and 2.\n", "It is 4."),
    ("It is 4.", "", "It is 4."),
    ("  <think>x</think>y", "x", "y"),
    ("<thinking is fun", "", "<thinking is fun"),
    ("The tag <think> later is text", "", "The tag <think> later is text"),
    ("<think>never closed", "never closed", ""),
    ("<think></think>Answer", "", "Answer"),
]


@pytest.mark.parametrize(("raw", "reasoning", "text"), ANSWERS)
def test_whole_and_at_every_split(raw: str, reasoning: str, text: str) -> None:
    assert split([raw]) == (reasoning, text)
    for cut in range(1, len(raw)):
        assert split([raw[:cut], raw[cut:]]) == (reasoning, text), cut
    assert split(list(raw)) == (reasoning, text)


def test_a_prompt_that_opened_the_block_starts_inside_it() -> None:
    raw = "\nHmm, 2+2.\n</think>\n4"
    for cut in range(1, len(raw)):
        assert split([raw[:cut], raw[cut:]], starts_inside=True) == ("Hmm, 2+2.\n", "4")


def test_bracket_tags_of_magistral() -> None:
    raw = "[THINK]short[/THINK]Done."
    assert split(list(raw), tags=BRACKET_THINK_TAGS) == ("short", "Done.")
    assert thinking_tags_of("{{ '[THINK]' }}") is BRACKET_THINK_TAGS
    assert thinking_tags_of("<|im_start|>") is THINK_TAGS
    assert thinking_tags_of(None) is THINK_TAGS


def test_opens_thinking_reads_the_prompts_end() -> None:
    assert opens_thinking("<|im_start|>assistant\n<think>\n", THINK_TAGS)
    assert not opens_thinking("<|im_start|>assistant\n", THINK_TAGS)


def test_text_streams_before_the_answer_ends() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<think>a") == [ReasoningDelta("a")]
    assert splitter.feed("b</th") == [ReasoningDelta("b")]
    assert splitter.feed("ink>c") == [TextDelta("c")]
