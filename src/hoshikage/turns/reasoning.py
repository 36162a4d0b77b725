"""Thinking, separated from the answer as it streams.

Models that think (Qwen3, DeepSeek-R1, QwQ, Magistral, …) open their answer with a block in
tags, `<think>…</think>` (or `[THINK]…[/THINK]`), and answer after it. Some templates open the
block in the prompt itself, so the answer starts inside it (`starts_inside`). Only a block
at the very start counts, as llama.cpp's parsers have it: a tag later in the text is text.
A possible closing tag split across pieces is held back until it is decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from hoshikage.turns.vocabulary import ReasoningDelta, TextDelta


@dataclass(frozen=True)
class ThinkingTags:
    open: str
    close: str


THINK_TAGS = ThinkingTags("<think>", "</think>")
BRACKET_THINK_TAGS = ThinkingTags("[THINK]", "[/THINK]")


def thinking_tags_of(template_source: str | None) -> ThinkingTags:
    """The tags a model thinks in, judged from its chat template."""
    if template_source and BRACKET_THINK_TAGS.open in template_source:
        return BRACKET_THINK_TAGS
    return THINK_TAGS


def template_thinks(template_source: str | None) -> bool:
    """Whether a chat template knows thinking (tags, a switch, or past reasoning)."""
    markers = (THINK_TAGS.open, BRACKET_THINK_TAGS.open, "enable_thinking", "reasoning_content")
    return template_source is not None and any(m in template_source for m in markers)


def opens_thinking(prompt_tail: str, tags: ThinkingTags) -> bool:
    """Whether the prompt's generation prompt already opened the thinking block."""
    return prompt_tail.rstrip().endswith(tags.open)


class ReasoningSplitter:
    """Splits a streamed answer into reasoning and text; feed pieces, then finish()."""

    def __init__(self, tags: ThinkingTags = THINK_TAGS, *, starts_inside: bool = False) -> None:
        self._tags = tags
        # "start": nothing decided yet; "thinking": inside the block; "answer": after it or
        # with no block at all.
        self._state = "thinking" if starts_inside else "start"
        self._held = ""
        self._after_block = False  # strip the whitespace that follows the closing tag
        self._thought = False  # some thinking was given out (its leading newline is not)

    def feed(self, text: str) -> list[TextDelta | ReasoningDelta]:
        self._held += text
        out: list[TextDelta | ReasoningDelta] = []
        while self._held:
            if self._state == "start":
                if not self._decide_start():
                    break
            elif self._state == "thinking":
                if not self._think(out):
                    break
            else:
                self._answer(out)
        return out

    def finish(self) -> list[TextDelta | ReasoningDelta]:
        held, self._held = self._held, ""
        if not held:
            return []
        if self._state == "thinking":  # the block never closed: all of it was thinking
            return [ReasoningDelta(held)]
        if self._after_block:
            held = held.lstrip()
        return [TextDelta(held)] if held else []

    # --- states ---------------------------------------------------------------------------
    def _decide_start(self) -> bool:
        """Whether the answer opens with the tag; False while it cannot be told yet."""
        stripped = self._held.lstrip()
        opening = self._tags.open
        if stripped.startswith(opening):
            self._held = stripped[len(opening) :]
            self._state = "thinking"
            return True
        if opening.startswith(stripped):  # empty, or a prefix of the tag: wait
            return False
        self._state = "answer"
        return True

    def _think(self, out: list[TextDelta | ReasoningDelta]) -> bool:
        if not self._thought:
            self._held = self._held.lstrip()
            if not self._held:
                return False
        closing = self._tags.close
        end = self._held.find(closing)
        if end >= 0:
            if end:
                out.append(ReasoningDelta(self._held[:end]))
                self._thought = True
            self._held = self._held[end + len(closing) :]
            self._state = "answer"
            self._after_block = True
            return True
        keep = _partial_suffix(self._held, closing)
        ready = self._held[: len(self._held) - keep]
        if ready:
            out.append(ReasoningDelta(ready))
            self._thought = True
        self._held = self._held[len(ready) :]
        return False

    def _answer(self, out: list[TextDelta | ReasoningDelta]) -> None:
        text, self._held = self._held, ""
        if self._after_block:
            text = text.lstrip()
            if not text:  # only whitespace so far: the answer has not begun
                return
            self._after_block = False
        out.append(TextDelta(text))


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
