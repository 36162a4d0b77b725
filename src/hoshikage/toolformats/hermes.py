"""Hermes 2/3, Qwen 2.5, QwQ and Qwen 3: a JSON object inside tags, one block per call.

<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris"}}
</tool_call>
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import TextPiece, ToolCallParser
from hoshikage.toolformats.callobject import CallObjectReader
from hoshikage.toolformats.grammar import GrammarBuilder, alternatives, calls, json_literal, literal
from hoshikage.toolformats.prompt import arguments_json, system_prompt
from hoshikage.toolformats.stream import StreamParser, starts

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

_TEXT = "text"
_CALL = "call"
_CLOSE = "close"  # after a call's object: its closing tag, if written
_BETWEEN = "between"  # after a call: another, or text


class HermesParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = _TEXT
        self._reader = CallObjectReader()
        self._raw = ""  # the call's text so far, returned as text if it is no call

    def _step(self) -> bool:
        if not self._buffer:
            return False
        if self._state == _TEXT:
            if self._text_until([OPEN]) is None:
                return False
            self._open()
            return True
        if self._state == _CALL:
            return self._read_call()
        if self._state == _CLOSE:
            self._skip_whitespace()
            found = starts(self._buffer, CLOSE, self._final)
            if found == "wait" or not self._buffer:
                return False
            if found == "yes":
                self._consume(len(CLOSE))
            self._state = _BETWEEN
            return True
        # _BETWEEN: whitespace between and after calls is dropped
        self._skip_whitespace()
        found = starts(self._buffer, OPEN, self._final)
        if found == "wait" or not self._buffer:
            return False
        if found == "yes":
            self._open()
        else:
            self._state = _TEXT
        return True

    def _open(self) -> None:
        self._raw = self._consume(len(OPEN))
        self._reader = CallObjectReader()
        self._state = _CALL

    def _read_call(self) -> bool:
        count, pieces = self._reader.feed(self._buffer)
        self._raw += self._consume(count)
        self._out += pieces
        if self._reader.failed:
            if self._reader.committed:  # the arguments were whole: keep the call
                self._out += self._reader.end() or []
            else:
                self._text(self._raw)
            self._state = _TEXT
            return True
        if self._reader.done:
            self._state = _CLOSE
            return True
        return False

    def _close(self) -> None:
        if self._state == _CALL:
            closing = self._reader.end()
            if closing is None:
                self._out.append(TextPiece(self._raw))
            else:
                self._out += closing


@dataclass(frozen=True)
class HermesFormat:
    name: str = "hermes"
    native: bool = True

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return HermesParser()

    def triggers(self) -> tuple[str, ...]:
        return ("<tool_call>",)

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        objects = []
        for tool in tools:
            objects.append(
                f'"{{" ws "\\"name\\"" ws ":" ws {json_literal(tool.name)} ws "," ws '
                f'"\\"arguments\\"" ws ":" ws {builder.arguments(tool)} ws "}}"'
            )
        call = builder.rule(
            f"{literal(OPEN)} ws {alternatives(objects)} ws {literal(CLOSE)}", "call"
        )
        return builder.build(f"ws {calls(call, parallel=parallel)}")

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(
            f'{OPEN}\n{{"name": {json.dumps(call.name, ensure_ascii=False)}, '
            f'"arguments": {arguments_json(call)}}}\n{CLOSE}'
            for call in calls
        )

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        return system_prompt(
            tools,
            f'{OPEN}\n{{"name": "<function name>", "arguments": {{<arguments as a JSON '
            f"object>}}}}\n{CLOSE}\n(one such block per call; several blocks for several calls)",
        )
