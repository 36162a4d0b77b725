"""Qwen3-Coder and Qwen 3.5 (also Nemotron 3 Nano, Step 3.5): XML-like tags, one per
parameter, the values raw text.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    <parameter=days>
    3
    </parameter>
    </function>
    </tool_call>

A value becomes JSON by its parameter's schema type: integers, numbers, booleans, null,
objects and arrays are read as JSON (or as Python literals, as these models sometimes
write them); strings, and anything that does not read as its type, stay text. The call
begins when its name is read; each parameter passes on when it closes.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import CallArguments, CallBegin, CallEnd, TextPiece, ToolCallParser
from hoshikage.toolformats.grammar import (
    GrammarBuilder,
    alternatives,
    calls,
    free_form,
    literal,
    ordered_fields,
    property_schemas,
    text_until,
)
from hoshikage.toolformats.prompt import system_prompt
from hoshikage.toolformats.pythonic import literal_value
from hoshikage.toolformats.stream import StreamParser, first_marker, starts

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
FUNCTION = "<function="
FUNCTION_END = "</function>"
PARAMETER = "<parameter="
PARAMETER_END = "</parameter>"
_VALUE_ENDS = (PARAMETER_END, FUNCTION_END, CLOSE)
_LONGEST_END = max(len(end) for end in _VALUE_ENDS)
_LONGEST_NAME = 256
NEWLINE = "\n"
_INTEGER = re.compile(r"[-+]?\d+")

_TEXT = "text"
_BLOCK = "block"  # after <tool_call>: <function=
_NAME = "name"  # the function's name, to '>'
_BODY = "body"  # parameters, or the function's end
_PARAMETER = "parameter"  # a parameter's name, to '>'
_VALUE = "value"  # a parameter's value, to its closing tag
_AFTER = "after"  # after </function>: </tool_call>, another call, or text


def convert(value: str, schema: Any) -> Any:
    """A parameter's raw text as the JSON value its schema's type says."""
    types = _types(schema)
    if value.strip().lower() in ("null", "none") and ("null" in types or types - {"string"}):
        return None
    if not types or "string" in types:
        return value
    text = value.strip()
    for kind in ("integer", "number", "boolean", "object", "array"):
        if kind not in types:
            continue
        if kind == "integer" and _INTEGER.fullmatch(text):
            return int(text)
        if kind == "number":
            number = _number(text)
            if number is not None:
                return number
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in ("object", "array"):
            structure = _structure(text)
            if isinstance(structure, dict if kind == "object" else list):
                return structure
    return value


def _types(schema: Any) -> set[str]:
    """The JSON types a schema allows (from `type`, or the options of anyOf/oneOf)."""
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        found = {kind}
    elif isinstance(kind, list):
        found = {item for item in kind if isinstance(item, str)}
    else:
        found = set()
        for option in schema.get("anyOf") or schema.get("oneOf") or ():
            found |= _types(option)
    known = {"string", "integer", "number", "boolean", "object", "array", "null"}
    return found & known


def _number(text: str) -> int | float | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _structure(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return literal_value(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


class Qwen3CoderParser(StreamParser):
    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        super().__init__()
        self._schemas = {
            tool.name: (tool.parameters or {}).get("properties") or {} for tool in tools
        }
        self._state = _TEXT
        self._raw = ""  # the text of a call not yet begun, returned as text if it is none
        self._function = ""
        self._parameter = ""
        self._written = 0  # parameters passed on in this call
        self._searched = 0  # how much of the value in the buffer was searched for its end

    def _step(self) -> bool:
        state = self._state
        if state == _TEXT:
            marker = self._text_until([OPEN, FUNCTION])
            if marker is None:
                return False
            self._raw = self._consume(len(marker))
            self._state = _BLOCK if marker == OPEN else _NAME
            return True
        if state in (_NAME, _PARAMETER):
            return self._name()
        if state == _VALUE:
            return self._value()
        self._raw += self._skip_whitespace()
        if not self._buffer:
            return False
        if state == _BLOCK:
            return self._expect(FUNCTION, _NAME)
        if state == _BODY:
            return self._body()
        # _AFTER
        for marker, following in ((CLOSE, _AFTER), (OPEN, _BLOCK), (FUNCTION, _NAME)):
            found = starts(self._buffer, marker, self._final)
            if found == "wait":
                return False
            if found == "yes":
                self._raw = self._consume(len(marker))
                self._state = following
                return True
        self._state = _TEXT
        return True

    def _expect(self, marker: str, following: str) -> bool:
        found = starts(self._buffer, marker, self._final)
        if found == "wait":
            return False
        if found == "no":
            return self._no_call()
        self._raw += self._consume(len(marker))
        self._state = following
        return True

    def _no_call(self) -> bool:
        self._text(self._raw)
        self._raw, self._state = "", _TEXT
        return True

    def _name(self) -> bool:
        end = self._buffer.find(">")
        if end < 0:
            if len(self._buffer) > _LONGEST_NAME or "\n" in self._buffer or self._final:
                return self._no_call() if self._state == _NAME else self._skip_parameter()
            return False
        name = self._consume(end + 1)[:-1].strip()
        if self._state == _PARAMETER:
            self._parameter, self._state = name, _VALUE
            return True
        if not name or "\n" in name or "<" in name:
            return self._no_call()
        self._function, self._written, self._raw = name, 0, ""
        self._out.append(CallBegin(name))
        self._state = _BODY
        return True

    def _skip_parameter(self) -> bool:
        """A parameter tag that never closes: dropped, the call goes on."""
        self._state = _BODY
        return True

    def _body(self) -> bool:
        for marker in (PARAMETER, FUNCTION_END, CLOSE):
            found = starts(self._buffer, marker, self._final)
            if found == "wait":
                return False
            if found == "no":
                continue
            if marker == PARAMETER:
                self._consume(len(marker))
                self._state = _PARAMETER
            else:  # </tool_call> without </function>: read again after the call
                self._consume(len(marker) if marker == FUNCTION_END else 0)
                self._end_call()
            return True
        # Stray text inside a function: dropped up to the next tag.
        stray = self._buffer.find("<", 1)
        self._consume(stray if stray > 0 else len(self._buffer))
        return True

    def _value(self) -> bool:
        # A value (a file's text) may be long: search only what arrived since last time.
        start = max(0, self._searched - _LONGEST_END)
        found = first_marker(self._buffer[start:], _VALUE_ENDS)
        if found is None and not self._final:
            self._searched = len(self._buffer)
            return False
        end, marker = (start + found[0], found[1]) if found else (len(self._buffer), "")
        self._searched = 0
        value = self._consume(end)
        if marker == PARAMETER_END:
            self._consume(len(marker))
        self._write_parameter(value)
        self._state = _BODY
        return True

    def _write_parameter(self, raw: str) -> None:
        value = raw[1:] if raw.startswith("\n") else raw
        value = value[:-1] if value.endswith("\n") else value
        schema = self._schemas.get(self._function, {}).get(self._parameter)
        pair = f"{json.dumps(self._parameter, ensure_ascii=False)}: "
        pair += json.dumps(convert(value, schema), ensure_ascii=False)
        self._out.append(CallArguments(("{" if not self._written else ", ") + pair))
        self._written += 1

    def _end_call(self) -> None:
        self._out += [CallArguments("}" if self._written else "{}"), CallEnd()]
        self._state = _AFTER

    def _close(self) -> None:
        if self._state in (_BODY, _VALUE, _PARAMETER):
            if self._state == _VALUE:
                self._write_parameter("")
            self._end_call()
        elif self._state in (_BLOCK, _NAME) and self._raw:
            self._out.append(TextPiece(self._raw))


def _raw_value(value: Any) -> str:
    """A parameter's value as Qwen's template writes it: strings raw, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _parameter_fields(builder: GrammarBuilder, tool: ToolSpec, until_end: str) -> str:
    if free_form(tool):
        name = "[A-Za-z_] [A-Za-z0-9_.-]{0,63}"
        pair = builder.rule(f'{literal(PARAMETER)} {name} ">\\n" {until_end} "\\n"', "param")
        return f"{pair}*"
    fields = []
    for name, schema, required in property_schemas(tool):
        head = literal(f"{PARAMETER}{name}>\n")
        fields.append((f'{head} {_value_rule(builder, schema, until_end)} "\\n"', required))
    return ordered_fields(builder, fields, "")


def _value_rule(builder: GrammarBuilder, schema: dict[str, Any], until_end: str) -> str:
    """A parameter's value and its closing tag, as the parser reads them."""
    end = literal("\n" + PARAMETER_END)
    options = schema.get("enum")
    if isinstance(options, list) and options and all(isinstance(item, str) for item in options):
        return f"{alternatives([literal(item) for item in options])} {end}"
    if not _types(schema) or "string" in _types(schema):
        longest = schema.get("maxLength")
        if isinstance(longest, int) and _types(schema) == {"string"}:
            # A short string, on one line: a bound a model cannot talk its way past.
            shortest = schema.get("minLength", 0)
            return f"[^<\\n]{{{shortest},{longest}}} {end}"
        return until_end  # raw text (its constraints beyond the type are not enforced)
    return f"{builder.schema(schema)} {end}"


@dataclass(frozen=True)
class Qwen3CoderFormat:
    name: str = "qwen3_coder"
    native: bool = True

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return Qwen3CoderParser(tools)

    def triggers(self) -> tuple[str, ...]:
        return ("<tool_call>",)

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        until_end = text_until(builder, "\n" + PARAMETER_END)
        functions = []
        for tool in tools:
            head = literal(f"{FUNCTION}{tool.name}>\n")
            body = _parameter_fields(builder, tool, until_end)
            functions.append(f"{head} {body} {literal(FUNCTION_END)}")
        call = builder.rule(
            f'{literal(OPEN + NEWLINE)} {alternatives(functions)} "\\n" {literal(CLOSE)}', "call"
        )
        return builder.build(f"ws {calls(call, parallel=parallel)}")

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        blocks = []
        for call in calls:
            parameters = "".join(
                f"{PARAMETER}{name}>\n{_raw_value(value)}\n{PARAMETER_END}\n"
                for name, value in call.arguments_object().items()
            )
            blocks.append(f"{OPEN}\n{FUNCTION}{call.name}>\n{parameters}{FUNCTION_END}\n{CLOSE}")
        return "\n".join(blocks)

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        return system_prompt(
            tools,
            f"{OPEN}\n{FUNCTION}example_function_name>\n{PARAMETER}example_parameter_1>\n"
            f"value_1\n{PARAMETER_END}\n{PARAMETER}example_parameter_2>\nvalue_2\n"
            f"{PARAMETER_END}\n{FUNCTION_END}\n{CLOSE}\n(one such block per call)",
        )
