"""What every tool-call format provides: a streaming parser, a grammar, and how tools reach
the prompt. The formats themselves are the other modules of this package; `registry.py`
picks one from a chat template.

A parser is fed the model's answer text piece by piece, as the engine streams it, and says
what the text is: plain text for the user, or a tool call beginning (with its name), pieces
of its JSON arguments, and its end. Text that might be the start of a call's marker is held
back until it is decided (never leaked to the user, never lost). Indexes and ids of calls
are not the parser's business: the layer above numbers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hoshikage.engine.types import ToolCall, ToolSpec


@dataclass(frozen=True)
class TextPiece:
    """Answer text for the user."""

    text: str


@dataclass(frozen=True)
class CallBegin:
    """A tool call begins: its function's name is known."""

    name: str


@dataclass(frozen=True)
class CallArguments:
    """The next piece of the current call's arguments, as JSON text; the pieces of one call
    joined are one JSON object."""

    text: str


@dataclass(frozen=True)
class CallEnd:
    """The current call is complete."""


Piece = TextPiece | CallBegin | CallArguments | CallEnd


class ToolCallParser(Protocol):
    def feed(self, text: str) -> list[Piece]:
        """The pieces that `text` (the next part of the answer) decides."""
        ...

    def finish(self) -> list[Piece]:
        """The answer has ended: everything still held back, decided. Text that did not
        become a call (a marker whose call never began) is returned as text. A call already
        begun (CallBegin sent) whose arguments were cut off is closed with the text that
        completes them as JSON (open strings and brackets closed)."""
        ...


class ToolFormat(Protocol):
    """One model family's way of calling tools."""

    # Read-only properties, so that frozen dataclasses and computed names implement them.
    @property
    def name(self) -> str:
        """The format's name: "hermes", "llama3_json", "pythonic", "mistral", "generic", …"""
        ...

    @property
    def native(self) -> bool:
        """The chat template renders `tools` itself (else: `system_prompt`)."""
        ...

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        """A fresh parser for one answer."""
        ...

    def triggers(self) -> tuple[str, ...]:
        """Regular expressions that match where a call begins in the output (for a lazy
        grammar: free text until one matches, constrained from the match on)."""
        ...

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        """GBNF (root rule `root`) accepting one call (or, with `parallel`, one or more)
        to the given tools in this format, each call's arguments valid under its tool's
        JSON Schema. With `required`, it applies from the answer's first token (leading
        whitespace allowed); without, from where a trigger matched (it starts with the
        marker the trigger matches)."""
        ...

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        """Calls written as the model writes them in this format (for a history whose
        template cannot render `tool_calls` itself); the parser reads it back as the calls."""
        ...

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        """For templates that cannot render tools: text for the system prompt that lists
        the tools and says how to call them in this format."""
        ...
