"""Mistral: a JSON array after `[TOOL_CALLS]` (Mistral 7B v0.3, Nemo), or, from the v11
tokenizer on (Mistral Small 3.x, Devstral, Magistral, Ministral), the name and then the
arguments after `[ARGS]`, repeated for parallel calls.

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]
    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}

Mistral Small 3.2 may write `[CALL_ID]` and an id between the name and `[ARGS]`. Where the
markers are control tokens detokenized to nothing, `name{...}` remains after an empty
marker; both parsers accept the other form too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import TextPiece, ToolCallParser
from hoshikage.toolformats.callobject import CallObjectReader
from hoshikage.toolformats.grammar import GrammarBuilder, alternatives, calls, json_literal, literal
from hoshikage.toolformats.jsonscan import JsonScanner
from hoshikage.toolformats.prompt import arguments_json, system_prompt
from hoshikage.toolformats.stream import StreamParser, starts

MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_NAME = re.compile(r"[A-Za-z0-9_.\-]*")
SEPARATOR = '"," ws'  # between the array's objects, in GBNF

_TEXT = "text"
_MARKER = "marker"  # after [TOOL_CALLS]: an array, an object or a name
_ITEM = "item"  # in the array, before an object (or its end)
_OBJECT = "object"  # reading one call object
_NEXT = "next"  # in the array, after an object
_NAME_STATE = "name"  # v11: the function's name
_CALL_ID_STATE = "call-id"  # v11: an id, skipped
_ARGUMENTS = "arguments"  # v11: before the arguments object
_STREAM = "stream"  # v11: inside the arguments object
_BETWEEN = "between"  # after calls: more calls, or text


class MistralParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = _TEXT
        self._raw = ""  # text since the last whole call, returned as text if no call follows
        self._reader = CallObjectReader()
        self._scanner = JsonScanner()
        self._name = ""
        self._in_array = False

    def _step(self) -> bool:
        state = self._state
        if state == _TEXT:
            if self._text_until([MARKER]) is None:
                return False
            self._raw = self._consume(len(MARKER))
            self._state = _MARKER
            return True
        if state in (_OBJECT, _STREAM):
            return self._object() if state == _OBJECT else self._stream()
        if state in (_NAME_STATE, _CALL_ID_STATE):
            return self._name_or_id()
        self._raw += self._skip_whitespace()
        if not self._buffer:
            return False
        char = self._buffer[0]
        if state == _MARKER:
            self._in_array = char == "["
            if self._in_array:
                self._raw += self._consume(1)
                self._goto(_ITEM)
            elif char == "{":
                self._begin_object()
            else:
                self._goto(_NAME_STATE)
        elif state == _ITEM:
            if char == "]":
                self._consume(1)
                self._goto(_BETWEEN)
            else:
                self._begin_object()
        elif state == _NEXT:
            if char in ",]":
                self._consume(1)
            self._goto(_ITEM if char == "," else _BETWEEN)
        elif state == _ARGUMENTS:
            return self._arguments()
        else:  # _BETWEEN
            return self._between()
        return True

    def _goto(self, state: str) -> None:
        self._state = state

    def _fail(self) -> bool:
        """No call here after all: what was read since the last call is text."""
        self._text(self._raw)
        self._raw = ""
        self._state = _TEXT
        return True

    # --- the JSON array form ---------------------------------------------------------------
    def _begin_object(self) -> None:
        self._reader = CallObjectReader()
        self._state = _OBJECT

    def _object(self) -> bool:
        count, pieces = self._reader.feed(self._buffer)
        self._raw += self._consume(count)
        self._out += pieces
        if self._reader.failed:
            if not self._reader.committed:
                return self._fail()
            self._out += self._reader.end() or []
            self._raw, self._state = "", _TEXT
            return True
        if self._reader.done:
            self._raw = ""
            self._state = _NEXT if self._in_array else _BETWEEN
            return True
        return False

    # --- the v11 form: name [ARGS] {…} -------------------------------------------------------
    def _name_or_id(self) -> bool:
        match = _NAME.match(self._buffer)
        length = match.end() if match else 0
        if length == len(self._buffer) and not self._final:
            return False  # the name (or id) may go on
        part = self._consume(length)
        self._raw += part
        if self._state == _NAME_STATE:
            if not part:
                return self._fail()
            self._name = part
        self._state = _ARGUMENTS
        return True

    def _arguments(self) -> bool:
        for marker, state in ((ARGS, _ARGUMENTS), (CALL_ID, _CALL_ID_STATE)):
            found = starts(self._buffer, marker, self._final)
            if found == "wait":
                return False
            if found == "yes":
                self._raw += self._consume(len(marker))
                self._state = state
                return True
        scanner = self._begin_arguments(self._name)
        if scanner is None:
            return self._fail()
        self._scanner, self._state = scanner, _STREAM
        return True

    def _stream(self) -> bool:
        result = self._stream_arguments(self._scanner)
        if result == "more":
            return False
        self._raw = ""
        self._state = _BETWEEN if result == "done" else _TEXT
        return True

    def _between(self) -> bool:
        found = starts(self._buffer, MARKER, self._final)
        if found == "wait":
            return False
        if found == "yes":
            self._raw = self._consume(len(MARKER))
            self._state = _MARKER
        else:
            self._state = _TEXT
        return True

    def _close(self) -> None:
        if self._state == _STREAM:
            self._end_arguments(self._scanner)
            return
        if self._state == _OBJECT:
            closing = self._reader.end()
            if closing is not None:
                self._out += closing
                return
        if self._state not in (_TEXT, _BETWEEN, _NEXT) and self._raw.strip():
            self._out.append(TextPiece(self._raw))


@dataclass(frozen=True)
class MistralFormat:
    """`v11`: the `[ARGS]` form; else the JSON array."""

    v11: bool = False
    native: bool = True

    @property
    def name(self) -> str:
        return "mistral_v11" if self.v11 else "mistral"

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return MistralParser()

    def triggers(self) -> tuple[str, ...]:
        return (r"\[TOOL_CALLS\]",)

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        if self.v11:
            heads = []
            for tool in tools:
                arguments = builder.arguments(tool)
                heads.append(f"{literal(tool.name)} call-id? {literal(ARGS)} {arguments}")
            builder.define("call-id", f"{literal(CALL_ID)} [a-zA-Z0-9]{{9}}")
            call = builder.rule(f"{literal(MARKER)} {alternatives(heads)}", "call")
            return builder.build(f"ws {calls(call, parallel=parallel)}")
        objects = []
        for tool in tools:
            objects.append(
                f'"{{" ws "\\"name\\"" ws ":" ws {json_literal(tool.name)} ws "," ws '
                f'"\\"arguments\\"" ws ":" ws {builder.arguments(tool)} ws call-id? "}}"'
            )
        builder.define("call-id", '"," ws "\\"id\\"" ws ":" ws "\\"" [a-zA-Z0-9]{9} "\\"" ws')
        call = builder.rule(alternatives(objects), "call")
        array = f'"[" ws {calls(call, parallel=parallel, separator=SEPARATOR)} ws "]"'
        return builder.build(f"ws {literal(MARKER)} ws {array}")

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        if self.v11:
            return "".join(f"{MARKER}{call.name}{ARGS}{arguments_json(call)}" for call in calls)
        objects = ", ".join(
            f'{{"name": {json.dumps(call.name, ensure_ascii=False)}, '
            f'"arguments": {arguments_json(call)}}}'
            for call in calls
        )
        return f"{MARKER}[{objects}]"

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        if self.v11:
            syntax = (
                f"{MARKER}<function name>{ARGS}{{<arguments as a JSON object>}}\n"
                f"(for several calls, repeat it: {MARKER}…{ARGS}{{…}}{MARKER}…{ARGS}{{…}})"
            )
        else:
            syntax = (
                f'{MARKER}[{{"name": "<function name>", "arguments": {{<arguments as a JSON '
                f"object>}}}}]\n(several calls: several objects in the list)"
            )
        return system_prompt(tools, syntax)
