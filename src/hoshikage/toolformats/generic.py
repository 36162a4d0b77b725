"""The format for models whose template knows no tools (or tools in a way not known here):
the system prompt asks for a JSON object listing the calls, or plain text.

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}

Also accepted: `{"tool_call": {...}}` (llama.cpp's generic format) and a bare call object
`{"name": ..., "arguments": ...}`. An object is only a call when it starts like one; other
JSON in the text is text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import TextPiece, ToolCallParser
from hoshikage.toolformats.callobject import CallObjectReader
from hoshikage.toolformats.grammar import GrammarBuilder, alternatives, calls, json_literal
from hoshikage.toolformats.prompt import arguments_json, system_prompt
from hoshikage.toolformats.stream import WHITESPACE, Start, StreamParser

# How a call's JSON may open (whitespace allowed between the parts), and what follows.
_LIST_OPENING = ("{", '"tool_calls"', ":", "[")
_SINGLE_OPENING = ("{", '"tool_call"', ":")
_BARE_KEYS = ('"name"', '"arguments"', '"parameters"', '"function"', '"type"')

_TEXT = "text"
_OPENING = "opening"  # at a '{': is it a call?
_ITEM = "item"  # in the list, before a call (or the list's end)
_CALL = "call"
_NEXT = "next"  # after a call in the list: ',' or ']'
_END = "end"  # after the list (or the single call): the object's '}'


def match_parts(buffer: str, parts: Sequence[str], final: bool) -> tuple[Start, int]:
    """Whether the buffer starts with `parts` (whitespace between them allowed), and how
    long the match is."""
    index = 0
    for number, part in enumerate(parts):
        if number:
            while index < len(buffer) and buffer[index] in WHITESPACE:
                index += 1
        rest = buffer[index:]
        if rest.startswith(part):
            index += len(part)
        elif not final and part.startswith(rest):
            return "wait", 0
        else:
            return "no", 0
    return "yes", index


class GenericParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = _TEXT
        self._raw = ""  # the text since the last call, returned as text if no call follows
        self._reader = CallObjectReader()
        self._in_list = False

    def _step(self) -> bool:
        state = self._state
        if state == _TEXT:
            if self._text_until(["{"]) is None:
                return False
            self._state = _OPENING
            return True
        if state == _OPENING:
            return self._opening()
        if state == _CALL:
            return self._call_object()
        self._raw += self._skip_whitespace()
        if not self._buffer:
            return False
        char = self._buffer[0]
        if state == _ITEM and char != "]":
            self._reader, self._state = CallObjectReader(), _CALL
            return True
        if state == _NEXT and char == ",":
            self._raw += self._consume(1)
            self._state = _ITEM
            return True
        if state in (_ITEM, _NEXT) and char == "]":
            self._raw += self._consume(1)
            self._state = _END
            return True
        if state == _END and char == "}":
            self._consume(1)
            self._raw, self._state = "", _TEXT
            return True
        return self._no_call()

    def _opening(self) -> bool:
        waiting = False
        for parts, following in ((_LIST_OPENING, _ITEM), (_SINGLE_OPENING, _CALL)):
            found, length = match_parts(self._buffer, parts, self._final)
            if found == "yes":
                self._raw = self._consume(length)
                self._in_list = following == _ITEM
                self._reader = CallObjectReader()
                self._state = following
                return True
            waiting = waiting or found == "wait"
        for key in _BARE_KEYS:
            found, _ = match_parts(self._buffer, ("{", key), self._final)
            if found == "yes":
                self._raw, self._in_list = "", False
                self._reader = CallObjectReader(require_arguments=True)
                self._state = _CALL
                return True
            waiting = waiting or found == "wait"
        if waiting:
            return False
        self._text(self._consume(1))  # a '{' that opens no call
        self._state = _TEXT
        return True

    def _call_object(self) -> bool:
        count, pieces = self._reader.feed(self._buffer)
        self._raw += self._consume(count)
        self._out += pieces
        if self._reader.failed:
            if self._reader.committed:
                self._out += self._reader.end() or []
                self._raw = ""
            return self._no_call()
        if not self._reader.done:
            return False
        self._raw = ""
        self._state = _NEXT if self._in_list else _END
        return True

    def _no_call(self) -> bool:
        """What was held back since the last call is text after all."""
        if self._raw.strip():
            self._text(self._raw)
        self._raw, self._state = "", _TEXT
        return True

    def _close(self) -> None:
        if self._state == _CALL:
            closing = self._reader.end()
            if closing is not None:
                self._out += closing
                return
        # A list closed but its object not: nothing of it is text.
        if self._state not in (_TEXT, _NEXT, _END) and self._raw.strip():
            self._out.append(TextPiece(self._raw))


@dataclass(frozen=True)
class GenericFormat:
    """`native`: the template renders the tools itself (in a way not known here), so the
    system prompt only needs to say how to call them."""

    native: bool = False
    name: str = "generic"

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return GenericParser()

    def triggers(self) -> tuple[str, ...]:
        return (r'\{\s*"tool_calls"',)

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        objects = []
        for tool in tools:
            objects.append(
                f'"{{" ws "\\"name\\"" ws ":" ws {json_literal(tool.name)} ws "," ws '
                f'"\\"arguments\\"" ws ":" ws {builder.arguments(tool)} ws "}}"'
            )
        call = builder.rule(alternatives(objects), "call")
        body = calls(call, parallel=parallel, separator='"," ws')
        opening = '"{" ws "\\"tool_calls\\"" ws ":" ws "[" ws'
        return builder.build(f'ws {opening} {body} ws "]" ws "}}"')

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        objects = ", ".join(
            f'{{"name": {json.dumps(call.name, ensure_ascii=False)}, '
            f'"arguments": {arguments_json(call)}}}'
            for call in calls
        )
        return f'{{"tool_calls": [{objects}]}}'

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        return system_prompt(
            tools,
            '{"tool_calls": [{"name": "<function name>", "arguments": {<arguments as a '
            "JSON object>}}]}\n(a JSON object and nothing else; for several calls, several "
            "objects in the list)",
        )
