"""Feeding parsers the way the engine does (any split of the text), and what they said."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import (
    CallArguments,
    CallBegin,
    CallEnd,
    Piece,
    TextPiece,
    ToolFormat,
)

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", "The time now.", {"type": "object", "properties": {}})
SEARCH = ToolSpec(
    "search",
    "Search the web.",
    {
        "type": "object",
        "properties": {
            "query": {"$ref": "#/$defs/Query"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "strict": {"type": "boolean"},
            "filters": {"type": "object", "properties": {"site": {"type": "string"}}},
        },
        "required": ["query"],
        "$defs": {"Query": {"type": "string", "maxLength": 40}},
    },
)
TOOLS = (WEATHER, TIME, SEARCH)


@dataclass(frozen=True)
class Answer:
    """What a parser made of an answer: the user's text and the calls, arguments parsed."""

    text: str
    calls: tuple[tuple[str, Any], ...]


def read(pieces: Iterable[Piece]) -> Answer:
    """The pieces put together, checking that they make sense in order: calls begin, get
    arguments and end, never nested, and each call's arguments join into one JSON object."""
    text: list[str] = []
    calls: list[tuple[str, Any]] = []
    name: str | None = None
    arguments: list[str] = []
    for piece in pieces:
        if isinstance(piece, TextPiece):
            assert name is None, f"text {piece.text!r} inside the call to {name}"
            text.append(piece.text)
        elif isinstance(piece, CallBegin):
            assert name is None, f"a call to {piece.name} inside the call to {name}"
            name, arguments = piece.name, []
        elif isinstance(piece, CallArguments):
            assert name is not None, f"arguments {piece.text!r} outside a call"
            arguments.append(piece.text)
        else:
            assert isinstance(piece, CallEnd)
            assert name is not None, "a call ended that never began"
            value = json.loads("".join(arguments))  # strict JSON
            assert isinstance(value, dict), value
            calls.append((name, value))
            name = None
    assert name is None, f"the call to {name} never ended"
    return Answer("".join(text), tuple(calls))


def parse(fmt: ToolFormat, chunks: Iterable[str], tools: Sequence[ToolSpec] = TOOLS) -> Answer:
    parser = fmt.parser(tools)
    pieces: list[Piece] = []
    for chunk in chunks:
        pieces += parser.feed(chunk)
    pieces += parser.finish()
    return read(pieces)


def parse_every_way(fmt: ToolFormat, text: str, tools: Sequence[ToolSpec] = TOOLS) -> Answer:
    """The answer fed whole, one character at a time, and split in two at every place:
    all must read the same; that reading."""
    whole = parse(fmt, [text], tools)
    assert parse(fmt, list(text), tools) == whole, "fed one character at a time"
    for cut in range(1, len(text)):
        split = parse(fmt, [text[:cut], text[cut:]], tools)
        assert split == whole, f"split at {cut}: {text[:cut]!r} | {text[cut:]!r}"
    return whole


def round_trip(fmt: ToolFormat, calls: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Calls written by `call_text` are read back as the same calls, and nothing else."""
    written = fmt.call_text(
        [ToolCall(f"call_{n}", name, json.dumps(args)) for n, (name, args) in enumerate(calls)]
    )
    assert parse_every_way(fmt, written) == Answer("", tuple(calls)), written


def match_start(pattern: str, text: str) -> int | None:
    """Where a trigger pattern first matches (None: nowhere), as the engine searches."""
    match = re.search(pattern, text)
    return None if match is None else match.start()


def text_streams_at_once(fmt: ToolFormat, text: str) -> None:
    """Plain text passes on as soon as no marker can begin in it: fed one character at a
    time, what is held back is never more than a marker's beginning."""
    parser = fmt.parser(TOOLS)
    passed: list[str] = []
    for index, char in enumerate(text):
        passed.append(read(parser.feed(char)).text)
        held = len(text[: index + 1]) - len("".join(passed))
        assert held <= 24, f"{held} characters held back after {text[: index + 1]!r}"
    passed.append(read(parser.finish()).text)
    assert "".join(passed) == text
