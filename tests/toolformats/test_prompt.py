"""Tools described in a system prompt."""

from __future__ import annotations

import json

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.prompt import arguments_json, system_prompt, tool_json, tool_list
from tests.toolformats.helpers import TOOLS, WEATHER


def test_tools_are_written_as_openai_writes_them() -> None:
    assert tool_json(WEATHER) == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": WEATHER.parameters,
        },
    }
    bare = tool_json(ToolSpec("f", parameters={}))["function"]
    assert bare == {"name": "f", "parameters": {"type": "object"}}
    lines = tool_list(TOOLS).splitlines()
    assert [json.loads(line)["function"]["name"] for line in lines] == [t.name for t in TOOLS]


def test_the_prompt_has_the_tools_then_the_syntax() -> None:
    prompt = system_prompt(TOOLS, "CALL SYNTAX")
    assert prompt.index('"get_weather"') < prompt.index("CALL SYNTAX")
    assert "plain text" in prompt


def test_arguments_json_is_an_object_whatever_the_history_held() -> None:
    assert arguments_json(ToolCall("c", "f", '{"a": "é"}')) == '{"a": "é"}'
    assert arguments_json(ToolCall("c", "f", "not json")) == "{}"
