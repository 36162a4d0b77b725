"""Llama 3.1, 3.2 and 3.3 (and Llama 4 with a JSON template): the answer is a bare JSON
object, maybe after `<|python_tag|>`, several separated by `;` or new lines.

    {"name": "get_weather", "parameters": {"city": "Paris"}}

A JSON object is only taken for a call at the answer's start (or after `<|python_tag|>`,
or after another call), as llama.cpp does: elsewhere it is text that shows JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import ToolCallParser
from hoshikage.toolformats.callobject import CallObjectReader
from hoshikage.toolformats.grammar import GrammarBuilder, alternatives, calls, json_literal, literal
from hoshikage.toolformats.prompt import arguments_json, system_prompt
from hoshikage.toolformats.stream import StreamParser, starts

PYTHON_TAG = "<|python_tag|>"

_START = "start"  # the answer's start: a call, or text
_TAG = "tag"  # after <|python_tag|>: a call's object
_CALL = "call"
_SEPARATOR = "separator"  # after a call: ';' or a new line, and another call or text
_TEXT = "text"


class Llama3Parser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = _START
        self._reader = CallObjectReader(require_arguments=True)
        self._raw = ""  # the text since the last call, returned as text if it is no call

    def _step(self) -> bool:
        if self._state == _TEXT:
            if self._text_until([PYTHON_TAG]) is None:
                return False
            self._raw = self._consume(len(PYTHON_TAG))
            self._state = _TAG
            return True
        if self._state == _CALL:
            return self._read_call()
        self._raw += self._skip_whitespace(" \t\n\r;" if self._state == _SEPARATOR else " \t\n\r")
        if not self._buffer:
            return False
        if self._buffer.startswith("{"):
            self._reader = CallObjectReader(require_arguments=True)
            self._state = _CALL
            return True
        if self._state != _TAG:
            found = starts(self._buffer, PYTHON_TAG, self._final)
            if found == "wait":
                return False
            if found == "yes":
                self._raw += self._consume(len(PYTHON_TAG))
                self._state = _TAG
                return True
        self._no_call()
        return True

    def _no_call(self) -> None:
        """What was held back is text (whitespace after calls is dropped)."""
        if self._raw.strip(" \t\n\r;"):
            self._text(self._raw)
        self._raw = ""
        self._state = _TEXT

    def _read_call(self) -> bool:
        count, pieces = self._reader.feed(self._buffer)
        self._raw += self._consume(count)
        self._out += pieces
        if self._reader.failed:
            if self._reader.committed:
                self._out += self._reader.end() or []
                self._raw = ""
            self._no_call()
            return True
        if self._reader.done:
            self._raw = ""
            self._state = _SEPARATOR
            return True
        return False

    def _close(self) -> None:
        if self._state == _CALL:
            closing = self._reader.end()
            if closing is not None:
                self._out += closing
                return
        if self._state != _TEXT:
            self._no_call()


@dataclass(frozen=True)
class Llama3JsonFormat:
    name: str = "llama3_json"
    native: bool = True

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return Llama3Parser()

    def triggers(self) -> tuple[str, ...]:
        return (r"<\|python_tag\|>", r'^\s*\{\s*"(?:type|name)"\s*:')

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        objects = []
        for tool in tools:
            objects.append(
                f'"{{" ws ( "\\"type\\"" ws ":" ws "\\"function\\"" ws "," ws )? '
                f'"\\"name\\"" ws ":" ws {json_literal(tool.name)} ws "," ws '
                f'"\\"parameters\\"" ws ":" ws {builder.arguments(tool)} ws "}}"'
            )
        call = builder.rule(alternatives(objects), "call")
        body = calls(call, parallel=parallel, separator='ws ( ";" ws )?')
        return builder.build(f"ws ( {literal(PYTHON_TAG)} ws )? {body}")

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(
            f'{{"name": {json.dumps(call.name, ensure_ascii=False)}, '
            f'"parameters": {arguments_json(call)}}}'
            for call in calls
        )

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        return system_prompt(
            tools,
            '{"name": "<function name>", "parameters": {<arguments as a JSON object>}}\n'
            "(several calls: one such object per line)",
        )
