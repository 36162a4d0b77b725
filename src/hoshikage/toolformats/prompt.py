"""Tools described in a system prompt, for templates that cannot render them themselves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hoshikage.engine.types import ToolCall, ToolSpec


def tool_json(tool: ToolSpec) -> dict[str, Any]:
    """A tool as OpenAI's API writes it, the shape most models saw in training."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters or {"type": "object"}
    return {"type": "function", "function": function}


def tool_list(tools: Sequence[ToolSpec]) -> str:
    """One JSON line per tool."""
    return "\n".join(json.dumps(tool_json(tool), ensure_ascii=False) for tool in tools)


def system_prompt(tools: Sequence[ToolSpec], how_to_call: str) -> str:
    """The common shape: the tools, then the exact syntax of a call in this format."""
    return (
        "You have access to the following tools (functions), described as JSON:\n"
        f"<tools>\n{tool_list(tools)}\n</tools>\n\n"
        "To call a tool, answer with the call and nothing else, exactly like this:\n"
        f"{how_to_call}\n"
        "Use only the tools listed, with arguments that follow their parameters' schema. "
        "If no tool is needed, answer the user in plain text."
    )


def arguments_json(call: ToolCall) -> str:
    """A call's arguments as compact JSON text of an object ({} for a model's slip)."""
    return json.dumps(call.arguments_object(), ensure_ascii=False)
