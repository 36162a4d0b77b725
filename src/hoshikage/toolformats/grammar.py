"""Building a format's GBNF: its markers around calls whose arguments follow each tool's
JSON Schema (converted by the engine's converter, one uniquely prefixed set of rules per
tool, so that any number of tools share one grammar)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from hoshikage.engine.grammar import json_schema_rules
from hoshikage.engine.types import ToolSpec

# GBNF tokens (literals whole), for rewriting JSON's literal words as Python's.
_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[^"\[]+', re.S)
_PYTHON_WORDS = {'"true"': '"True"', '"false"': '"False"', '"null"': '"None"'}

# Whitespace between a format's parts: bounded, so that a small model cannot loop on it.
WS_RULE = '( " " | "\\n"{1,2} [ \\t]{0,20} )?'


def literal(text: str) -> str:
    """A GBNF string literal matching exactly `text`."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def json_literal(value: Any) -> str:
    """A GBNF literal of a value written as JSON (a tool's name as a JSON string)."""
    return literal(json.dumps(value, ensure_ascii=False))


def object_schema(tool: ToolSpec) -> dict[str, Any]:
    """The tool's parameters, as an object schema. One that names no properties accepts any
    object (the converter would take it for any JSON value); `"properties": {}` only `{}`,
    as the converter closes objects to the properties they name."""
    schema = dict(tool.parameters) if tool.parameters else {}
    schema.setdefault("type", "object")
    if free_form(tool):
        schema.setdefault("additionalProperties", True)
    return schema


def property_schemas(tool: ToolSpec) -> list[tuple[str, dict[str, Any], bool]]:
    """The tool's parameters one by one: name, schema (with the definitions its references
    may point to), and whether it is required."""
    parameters = tool.parameters or {}
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    definitions = {key: parameters[key] for key in ("$defs", "definitions") if key in parameters}
    result = []
    for name, schema in properties.items():
        full = {**schema, **definitions} if isinstance(schema, dict) else {}
        result.append((str(name), full, name in required))
    return result


def free_form(tool: ToolSpec) -> bool:
    """The schema names no arguments and lets any be given."""
    parameters = tool.parameters or {}
    extra = parameters.get("additionalProperties")
    if parameters.get("properties"):
        return False
    return (
        extra is True
        or isinstance(extra, dict)
        or ("properties" not in parameters and extra is None)
    )


class GrammarBuilder:
    """Rules collected under unique names, written out with a root."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {"ws": WS_RULE}
        self._schema_rules: list[str] = []
        self._count = 0

    def rule(self, body: str, hint: str = "r") -> str:
        """Add a rule for `body`; its name."""
        name = self.reserve(hint)
        self._rules[name] = body
        return name

    def reserve(self, hint: str = "r") -> str:
        """A new rule's name, for a rule defined later (rules that refer to each other)."""
        self._count += 1
        return f"{hint}-{self._count}"

    def define(self, name: str, body: str) -> None:
        self._rules[name] = body

    def schema(self, schema: dict[str, Any], *, python: bool = False) -> str:
        """Rules for JSON valid under `schema`; the name of the rule for the whole value.
        With `python`, the value is written as a Python literal instead (True, False and
        None for JSON's words; the rest of JSON is Python already)."""
        self._count += 1
        root, rules = json_schema_rules(schema, f"s{self._count}-")
        if python:
            rules = _GBNF_TOKEN.sub(lambda match: _PYTHON_WORDS.get(match[0], match[0]), rules)
        self._schema_rules.append(rules)
        return root

    def arguments(self, tool: ToolSpec) -> str:
        """The rule for a JSON object of the tool's arguments."""
        return self.schema(object_schema(tool))

    def build(self, root: str) -> str:
        """The grammar, `root` its start. Roots end with the last call: nothing may follow
        but the end of the answer (whitespace there only wastes a small model's tokens)."""
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self._rules.items()]
        return "\n".join(lines + self._schema_rules) + "\n"


def calls(call: str, *, parallel: bool, separator: str = "ws") -> str:
    """One call, or with `parallel` one or more separated by `separator`."""
    return f"{call} ( {separator} {call} )*" if parallel else call


def alternatives(rules: Sequence[str]) -> str:
    return "( " + " | ".join(rules) + " )"


def ordered_fields(
    builder: GrammarBuilder, fields: Sequence[tuple[str, bool]], separator: str
) -> str:
    """A rule for fields in the given order, each required one present and each optional
    one present or not, with `separator` between those present (`separator` may be "")."""
    if not fields:
        return '""'
    # rest[i][first]: the fields from i on, where `first` says none was written before.
    rest: dict[tuple[int, bool], str] = {}
    for index in range(len(fields) - 1, -1, -1):
        field, required = fields[index]
        for first in (True, False):
            lead = field if first or not separator else f"{separator} {field}"
            after = rest.get((index + 1, False), '""')
            present = f"{lead} {after}"
            if required:
                body = present
            else:
                skipped = rest.get((index + 1, first), '""')
                body = f"( {present} ) | {skipped}"
            rest[(index, first)] = builder.rule(body, "fields")
    return rest[(0, True)]


def text_until(builder: GrammarBuilder, terminator: str) -> str:
    """A rule for any text that does not contain `terminator`, followed by `terminator`
    (a string parameter's raw value and its closing tag). Built from the terminator's
    matching automaton: state k has matched its first k characters."""
    length = len(terminator)
    alphabet = sorted(set(terminator))
    names = [builder.reserve("until") for _ in range(length)]
    for state in range(length):
        branches = []
        for char in alphabet:
            following = _advance(terminator, state, char)
            if following == length:
                branches.append(literal(char))
            else:
                branches.append(f"{literal(char)} {names[following]}")
        other = "".join(_class_escape(char) for char in alphabet)
        branches.append(f"[^{other}] {names[_advance(terminator, state, None)]}")
        builder.define(names[state], " | ".join(branches))
    return names[0]


def _advance(pattern: str, state: int, char: str | None) -> int:
    """The longest prefix of `pattern` that ends the text matched so far plus `char`."""
    if char is None:
        return 0
    text = pattern[:state] + char
    for length in range(min(len(text), len(pattern)), 0, -1):
        if text.endswith(pattern[:length]):
            return length
    return 0


def _class_escape(char: str) -> str:
    if char in "]^-\\[":
        return "\\" + char
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    return char
