"""The engine's answer text, turned into the typed events of a turn as it streams.

Thinking is split off first (`ReasoningSplitter`), then the rest goes through the model
family's tool-call parser, if tools were offered. Calls are numbered here, in the order
they appear, and each gets an id once: a client sees a call's index, id and name exactly
once, then its arguments in pieces.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

from hoshikage.engine.types import ToolCall
from hoshikage.toolformats.base import (
    CallArguments,
    CallBegin,
    CallEnd,
    Piece,
    TextPiece,
    ToolCallParser,
)
from hoshikage.turns.reasoning import ReasoningSplitter
from hoshikage.turns.vocabulary import (
    AnswerEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
)


def new_call_id() -> str:
    """An id in OpenAI's style (`call_` and 24 random characters)."""
    return f"call_{secrets.token_urlsafe(18)}"


class AnswerParser:
    """Feed the answer's text as it comes; read the events, and at the end the whole of it."""

    def __init__(
        self,
        *,
        splitter: ReasoningSplitter | None = None,
        tool_parser: ToolCallParser | None = None,
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        self._splitter = splitter
        self._tools = tool_parser
        self._new_id = new_id
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self.calls: list[ToolCall] = []
        # Trailing whitespace is held until text follows: before, between and after calls it
        # is only the model's layout, and a client should not get "\n\n" beside its calls.
        self._blank = ""
        self._open: tuple[int, str, str, list[str]] | None = None  # index, id, name, arguments

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def open_call_id(self) -> str | None:
        """The id of the call whose arguments are streaming, if one is."""
        return None if self._open is None else self._open[1]

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    def feed(self, text: str) -> list[AnswerEvent]:
        if not text:
            return []
        split = self._splitter.feed(text) if self._splitter else [TextDelta(text)]
        return self._route(split)

    def finish(self) -> list[AnswerEvent]:
        """Everything still held back, decided (a call left half-written is text)."""
        events = self._route(self._splitter.finish() if self._splitter else [])
        if self._tools is not None:
            events += self._pieces(self._tools.finish())
        if self._open is not None:  # a parser that left a call open: end it as it stands
            events += self._pieces([CallEnd()])
        blank, self._blank = self._blank, ""
        if blank and not self.calls:
            self._text.append(blank)
            events.append(TextDelta(blank))
        return events

    def _route(self, split: Iterable[TextDelta | ReasoningDelta]) -> list[AnswerEvent]:
        events: list[AnswerEvent] = []
        for delta in split:
            if isinstance(delta, ReasoningDelta):
                self._reasoning.append(delta.text)
                events.append(delta)
            elif self._tools is None:
                events += self._text_events(delta.text)
            else:
                events += self._pieces(self._tools.feed(delta.text))
        return events

    def _pieces(self, pieces: Iterable[Piece]) -> list[AnswerEvent]:
        events: list[AnswerEvent] = []
        for piece in pieces:
            if isinstance(piece, TextPiece):
                events += self._text_events(piece.text)
            elif isinstance(piece, CallBegin):
                if self._open is not None:  # a new call before the last one ended
                    events += self._pieces([CallEnd()])
                self._blank = ""  # the layout before a call is not text
                index, call_id = len(self.calls), self._new_id()
                self._open = (index, call_id, piece.name, [])
                events.append(ToolCallStarted(index, call_id, piece.name))
            elif isinstance(piece, CallArguments):
                if self._open is not None and piece.text:
                    self._open[3].append(piece.text)
                    events.append(ToolCallDelta(self._open[0], piece.text))
            elif isinstance(piece, CallEnd) and self._open is not None:
                index, call_id, name, arguments = self._open
                self._open = None
                call = ToolCall(call_id, name, _arguments_text(arguments))
                self.calls.append(call)
                events.append(ToolCallEnded(index, call))
        return events

    def _text_events(self, text: str) -> list[AnswerEvent]:
        """Text for the user, its trailing whitespace held until more text follows (so it
        reads the same however the answer was split)."""
        combined = self._blank + text
        shown = combined.rstrip()
        self._blank = combined[len(shown) :]
        if not shown:
            return []
        self._text.append(shown)
        return [TextDelta(shown)]


def _arguments_text(pieces: list[str]) -> str:
    """The call's arguments as the model wrote them, or `{}` for a call with none."""
    return "".join(pieces).strip() or "{}"
