"""Llama 3.2 and Llama 4 (and Gemma 3 with a pythonic template): a Python list of calls
with keyword arguments, at the answer's start, maybe inside `<|python_start|>`…`<|python_end|>`.

    [get_weather(city="Paris", days=3), get_time()]

Each call is read with `ast` (never evaluated): its arguments must be literals (strings,
numbers, True/False/None or JSON's true/false/null, lists, tuples, dicts), and become a
JSON object. A call passes on whole when its closing parenthesis arrives.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import ToolCallParser
from hoshikage.toolformats.grammar import (
    GrammarBuilder,
    alternatives,
    calls,
    free_form,
    literal,
    ordered_fields,
    property_schemas,
)
from hoshikage.toolformats.prompt import system_prompt
from hoshikage.toolformats.stream import StreamParser, starts

PYTHON_START = "<|python_start|>"
PYTHON_END = "<|python_end|>"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
_NAMED_CONSTANTS: dict[str, Any] = {
    "True": True, "False": False, "None": None, "true": True, "false": False, "null": None,
}  # fmt: skip
_CLOSERS = {"(": ")", "[": "]", "{": "}"}

_START = "start"
_LIST = "list"  # after <|python_start|>: the list's '['
_CALL = "call"  # before or inside a call
_NEXT = "next"  # after a call: ',' or ']'
_END = "end"  # after the list: <|python_end|>, if written
_TEXT = "text"


class CallScanner:
    """Follows the text of one call, `name(...)`, through its strings and brackets, to the
    parenthesis that closes it."""

    def __init__(self) -> None:
        self._open: list[str] = []  # brackets to close, innermost last
        self._quote = ""  # the string being read ends with this: ', ", ''' or \"\"\"
        self._escaped = False
        self._name_length = 0
        self._in_name = True
        self.done = False
        self.failed = False

    def feed(self, text: str, final: bool) -> int:
        """Consume `text` up to the call's end: how many characters."""
        index = 0
        while index < len(text) and not self.done and not self.failed:
            step = self._step(text, index, final)
            if step == 0:
                break  # a quote whose kind the next characters decide
            index += step
        return index

    def _step(self, text: str, index: int, final: bool) -> int:
        char = text[index]
        if self._in_name:
            if char in _NAME_CHARS and (self._name_length or char not in "0123456789."):
                self._name_length += 1
                return 1
            self._in_name = False
            if char != "(" or not self._name_length:
                self.failed = True
                return 0
        if self._quote:
            return self._string_step(text, index, final)
        if char in "'\"":
            if len(text) - index < 3 and not final:
                return 0
            triple = text[index : index + 3] == char * 3
            self._quote = char * 3 if triple else char
            return len(self._quote)
        if char in _CLOSERS:
            self._open.append(_CLOSERS[char])
        elif char in ")]}":
            if not self._open or self._open.pop() != char:
                self.failed = True
                return 0
            self.done = not self._open
        return 1

    def _string_step(self, text: str, index: int, final: bool) -> int:
        char = text[index]
        if self._escaped:
            self._escaped = False
        elif char == "\\":
            self._escaped = True
        elif char == self._quote[0]:
            if len(self._quote) == 1:
                self._quote = ""
            elif text.startswith(self._quote, index):
                self._quote = ""
                return 3
            elif len(text) - index < 3 and not final:
                return 0
        return 1


def parse_call(text: str) -> tuple[str, str] | None:
    """A call's name and its arguments as JSON text, or None for text that is not one
    call with literal keyword arguments."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = _dotted_name(node.func)
    if name is None:
        return None
    arguments: dict[str, Any] = {}
    try:
        for keyword in node.keywords:
            if keyword.arg is None:  # **kwargs
                return None
            arguments[keyword.arg] = literal_value(keyword.value)
    except ValueError:
        return None
    return name, json.dumps(arguments, ensure_ascii=False)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def literal_value(node: ast.expr) -> Any:
    """A literal's value as JSON sees it (tuples become lists); ValueError otherwise."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a JSON number")
        if value is None or isinstance(value, str | int | float):
            return value
        raise ValueError("not a JSON value")
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = literal_value(node.operand)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("a sign before something not a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple):
        return [literal_value(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        result: dict[str, Any] = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if key is None:
                raise ValueError("** in a dict")
            name = literal_value(key)
            if isinstance(name, dict | list):
                raise ValueError("not a key")
            result[name if isinstance(name, str) else json.dumps(name)] = literal_value(item)
        return result
    raise ValueError("not a literal")


def python_literal(value: Any) -> str:
    """A JSON value written as a Python literal (what `literal_value` reads back)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str | int | float):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(key), ensure_ascii=False)}: {python_literal(item)}"
            for key, item in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return json.dumps(str(value), ensure_ascii=False)


class PythonicParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = _START
        self._raw = ""  # the text since the last call, returned as text if it is no call
        self._call_text = ""  # the call being read
        self._scanner = CallScanner()

    def _step(self) -> bool:
        if self._state == _TEXT:
            if self._text_until([PYTHON_START]) is None:
                return False
            self._raw = self._consume(len(PYTHON_START))
            self._state = _LIST
            return True
        if self._state == _CALL and self._call_text:
            return self._read_call()
        self._raw += self._skip_whitespace()
        if not self._buffer:
            return False
        char = self._buffer[0]
        state = self._state
        if state in (_START, _LIST) and char == "[":
            self._raw += self._consume(1)
            self._begin_call()
        elif state == _START:
            found = starts(self._buffer, PYTHON_START, self._final)
            if found == "wait":
                return False
            if found == "no":
                return self._no_call()
            self._raw += self._consume(len(PYTHON_START))
            self._state = _LIST
        elif state == _CALL:
            return self._read_call()
        elif state == _NEXT:
            if char not in ",]":
                return self._no_call()
            self._raw += self._consume(1)
            if char == ",":
                self._begin_call()
            else:
                self._raw, self._state = "", _END
        elif state == _END:
            found = starts(self._buffer, PYTHON_END, self._final)
            if found == "wait":
                return False
            if found == "yes":
                self._consume(len(PYTHON_END))
            self._state = _TEXT
        else:
            return self._no_call()
        return True

    def _begin_call(self) -> None:
        self._call_text, self._scanner, self._state = "", CallScanner(), _CALL

    def _read_call(self) -> bool:
        count = self._scanner.feed(self._buffer, self._final)
        self._call_text += self._consume(count)
        if self._scanner.failed:
            return self._no_call()
        if not self._scanner.done:
            return False
        parsed = parse_call(self._call_text)
        if parsed is None:
            return self._no_call()
        self._call(*parsed)
        self._raw, self._call_text, self._state = "", "", _NEXT
        return True

    def _no_call(self) -> bool:
        """What was held back since the last call is text after all."""
        held = self._raw + self._call_text
        if held.strip():
            self._text(held)
        self._raw, self._call_text, self._state = "", "", _TEXT
        return True

    def _close(self) -> None:
        if self._state not in (_TEXT, _END):
            self._no_call()


def _keyword_fields(builder: GrammarBuilder, tool: ToolSpec) -> str:
    if free_form(tool):
        value = builder.schema({}, python=True)
        pair = builder.rule(f'[A-Za-z_] [A-Za-z0-9_]{{0,63}} "=" {value}', "kwarg")
        return f'( {pair} ( "," ws {pair} )* )?'
    fields = []
    for name, schema, required in property_schemas(tool):
        if _IDENTIFIER.fullmatch(name):  # a name Python cannot write as a keyword is left out
            fields.append(
                (f"{literal(name + '=')} {builder.schema(schema, python=True)}", required)
            )
    return ordered_fields(builder, fields, '"," ws')


@dataclass(frozen=True)
class PythonicFormat:
    name: str = "pythonic"
    native: bool = True

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return PythonicParser()

    def triggers(self) -> tuple[str, ...]:
        return (r"<\|python_start\|>", r"^\s*\[\s*[A-Za-z_][A-Za-z0-9_.]*\(")

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        heads = [
            f'{literal(tool.name + "(")} {_keyword_fields(builder, tool)} ")"' for tool in tools
        ]
        call = builder.rule(alternatives(heads), "call")
        body = calls(call, parallel=parallel, separator='"," ws')
        start, end = literal(PYTHON_START), literal(PYTHON_END)
        return builder.build(f'ws ( {start} ws )? "[" ws {body} ws "]" ( ws {end} )?')

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        written = []
        for call in calls:
            keywords = ", ".join(
                f"{name}={python_literal(value)}" for name, value in call.arguments_object().items()
            )
            written.append(f"{call.name}({keywords})")
        return "[" + ", ".join(written) + "]"

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        return system_prompt(
            tools,
            "[func_name1(param_name1=value1, param_name2=value2), func_name2(param=value)]\n"
            "(a Python list of calls with keyword arguments whose values are literals; "
            "do not use variables)",
        )
