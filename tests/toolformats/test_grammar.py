"""GBNF building blocks, every format's grammar against llama.cpp, and grammars driving the
real engine: what a constrained model writes, its format's parser reads as valid calls."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from hoshikage.engine import ChatMessage, Engine, LoadOptions, SamplingParams
from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.grammar import (
    GrammarBuilder,
    literal,
    object_schema,
    ordered_fields,
    property_schemas,
    text_until,
)
from hoshikage.toolformats.registry import FORMAT_NAMES, format_named
from tests.toolformats.grammars import GrammarChecker
from tests.toolformats.helpers import SEARCH, TIME, TOOLS, WEATHER, parse


def test_literal_escapes_what_gbnf_needs(checker: GrammarChecker) -> None:
    text = 'a "quoted" \\ back\nslash\ttab ｜full▁width｜'
    assert checker.accepts(f"root ::= {literal(text)}", text)


def test_ordered_fields_require_what_is_required(checker: GrammarChecker) -> None:
    builder = GrammarBuilder()
    fields = ordered_fields(builder, [('"a"', True), ('"b"', False), ('"c"', False)], '","')
    grammar = builder.build(fields)
    for text in ("a", "a,b", "a,c", "a,b,c"):
        assert checker.accepts(grammar, text), text
    for text in ("", "b", "a,", "a,c,b", "ab"):
        assert not checker.accepts(grammar, text), text
    builder = GrammarBuilder()
    grammar = builder.build(ordered_fields(builder, [('"x"', False), ('"y"', False)], ""))
    for text in ("", "x", "y", "xy"):
        assert checker.accepts(grammar, text), text


def test_text_until_stops_at_the_first_terminator(checker: GrammarChecker) -> None:
    builder = GrammarBuilder()
    grammar = builder.build(text_until(builder, "\n</p>"))
    for text in ("\n</p>", "x\n</p>", "a </p> \n</ \n<\n</p>", "\n\n</p>", "<\n</p>"):
        assert checker.accepts(grammar, text), text
    for text in ("x", "x\n</p>y", "a\n</p>\n</p>"):
        assert not checker.accepts(grammar, text), text


def test_object_and_property_schemas() -> None:
    assert object_schema(ToolSpec("f")) == {"type": "object", "additionalProperties": True}
    assert object_schema(TIME) == {"type": "object", "properties": {}}
    assert object_schema(WEATHER)["required"] == ["city"]
    query = property_schemas(SEARCH)[0]
    assert query[0] == "query" and query[2] and "$defs" in query[1]


@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("parallel", [False, True])
def test_every_grammar_compiles_and_accepts_the_formats_own_calls(
    checker: GrammarChecker, name: str, parallel: bool
) -> None:
    fmt = format_named(name)
    calls = [("get_weather", {"city": "Paris", "days": 2}), ("get_time", {})]
    written = fmt.call_text(
        [ToolCall(f"c{n}", function, json.dumps(args)) for n, (function, args) in enumerate(calls)]
    )
    one = fmt.call_text([ToolCall("c0", "get_weather", '{"city": "Paris", "days": 2}')])
    for required in (True, False):
        grammar = fmt.grammar(TOOLS, parallel=parallel, required=required)
        assert checker.compiles(grammar)
        assert checker.accepts(grammar, one), one
        assert checker.accepts(grammar, written) == parallel, written


# What each format's model writes with text before its calls, for the lazy grammars.
LAZY = {
    "hermes": 'Let me see.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
    "llama3_json": '{"name": "get_time", "parameters": {}}',
    "pythonic": "[get_time()]",
    "mistral": 'Sure. [TOOL_CALLS][{"name": "get_time", "arguments": {}}]',
    "mistral_v11": "Sure. [TOOL_CALLS]get_time[ARGS]{}",
    "qwen3_coder": "Now:\n<tool_call>\n<function=get_time>\n</function>\n</tool_call>",
    "deepseek_r1": (
        "Ok.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n"
        "```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    ),
    "deepseek_v3_1": (
        "Ok.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    ),
    "generic": 'Sure: {"tool_calls": [{"name": "get_time", "arguments": {}}]}',
}


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_a_lazy_grammar_takes_over_where_its_trigger_matches(
    checker: GrammarChecker, name: str
) -> None:
    # As the engine's LazyTrigger does: search the output after every token; from the first
    # match on, the grammar must accept what follows (and the text before stays free).
    fmt, output = format_named(name), LAZY[name]
    grammar = fmt.grammar(TOOLS, parallel=True, required=False)
    for end in range(1, len(output) + 1):
        matches = [re.search(trigger, output[:end]) for trigger in fmt.triggers()]
        found = [match for match in matches if match is not None]
        if found:
            start = found[0].start()
            assert checker.accepts(grammar, output[start:]), output[start:]
            assert parse(fmt, [output]).calls == (("get_time", {}),)
            return
    pytest.fail(f"no trigger matched {output!r}")


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Iterator[Engine]:
    # One thread: with the CPUs shared, more threads wait on each other (ten times slower).
    with Engine(smollm2_path, LoadOptions(n_ctx=1024, n_threads=1)) as engine:
        yield engine


# llama.cpp's converter (this version) ignores numeric bounds: the schema here has none.
FORECAST = ToolSpec(
    "get_forecast",
    "The weather forecast for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 24}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_a_constrained_model_writes_calls_its_parser_reads(smollm2: Engine, name: str) -> None:
    fmt = format_named(name)
    tools = (FORECAST, TIME)
    messages = [
        ChatMessage("system", fmt.system_prompt(tools)),
        ChatMessage("user", "What is the weather in Paris for the next two days?"),
    ]
    grammar = fmt.grammar(tools, parallel=False, required=True)
    params = SamplingParams(temperature=0.0, max_tokens=160, grammar=grammar)
    generation = smollm2.chat(messages, params)
    assert generation.wait().finish_reason == "stop", generation.text
    answer = parse(fmt, [generation.text], tools)
    assert answer.text.strip() == ""
    ((called, arguments),) = answer.calls
    schema = {tool.name: tool.parameters for tool in tools}[called]
    jsonschema.validate(arguments, schema)


def test_schemas_with_the_same_definitions_share_a_grammar(checker: GrammarChecker) -> None:
    # Two tools whose schemas both define "Item", differently: each keeps its own.
    first = ToolSpec(
        "first",
        parameters={
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
            "$defs": {"Item": {"type": "integer"}},
        },
    )
    second = ToolSpec(
        "second",
        parameters={
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
            "$defs": {"Item": {"type": "string"}},
        },
    )
    grammar = format_named("generic").grammar([first, second], parallel=True, required=True)
    good = (
        '{"tool_calls": [{"name": "first", "arguments": {"item": 1}}, '
        '{"name": "second", "arguments": {"item": "x"}}]}'
    )
    assert checker.accepts(grammar, good)
    assert not checker.accepts(grammar, good.replace('"item": 1', '"item": "1"'))
    assert not checker.accepts(grammar, good.replace('"item": "x"', '"item": 2'))


# Formats of distinct grammar shapes, whose markers SmolLM2 copies from an example call.
@pytest.mark.parametrize("name", ["generic", "mistral", "qwen3_coder", "deepseek_r1"])
def test_a_lazy_grammar_in_the_engine_leaves_text_free_and_constrains_the_call(
    smollm2: Engine, name: str
) -> None:
    fmt = format_named(name)
    tools = (FORECAST, TIME)
    example = fmt.call_text([ToolCall("c1", "get_forecast", '{"city": "Rome", "days": 1}')])
    messages = [
        ChatMessage("system", fmt.system_prompt(tools)),
        ChatMessage("user", "Weather in Rome tomorrow?"),
        ChatMessage("assistant", f"Let me check.\n{example}"),
        ChatMessage("user", "And the weather in Paris for the next two days?"),
    ]
    grammar = fmt.grammar(tools, parallel=False, required=False)
    params = SamplingParams(
        temperature=0.0, max_tokens=120, grammar=grammar, grammar_triggers=fmt.triggers()
    )
    generation = smollm2.chat(messages, params)
    assert generation.wait().finish_reason == "stop", generation.text
    answer = parse(fmt, [generation.text], tools)
    assert answer.text.strip(), generation.text  # free text came first
    ((called, arguments),) = answer.calls
    jsonschema.validate(arguments, {tool.name: tool.parameters for tool in tools}[called])
