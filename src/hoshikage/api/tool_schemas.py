"""Tool definitions as the OpenAI and Ollama APIs both send them:
`{"type": "function", "function": {"name", "description", "parameters"}}`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hoshikage.engine import ToolSpec
from hoshikage.turns.vocabulary import ToolChoice, ToolUse


class FunctionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON Schema object for the arguments (none: no arguments)."
    )
    strict: bool | None = Field(
        None, description="Accepted: arguments always follow the schema (grammar-enforced)."
    )


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = Field(description="Only function tools.")
    function: FunctionIn

    def to_engine(self) -> ToolSpec:
        function = self.function
        parameters = function.parameters
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        return ToolSpec(function.name, function.description or "", parameters)


class NamedFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoiceIn = Literal["none", "auto", "required"] | NamedToolChoice | None


def tool_use(
    tools: list[ToolIn] | None, choice: ToolChoiceIn, parallel_tool_calls: bool | None
) -> ToolUse:
    """The neutral tool use of a request's `tools`, `tool_choice`, `parallel_tool_calls`."""
    specs = tuple(tool.to_engine() for tool in tools or ())
    if isinstance(choice, NamedToolChoice):
        neutral = ToolChoice.function(choice.function.name)
    else:
        neutral = ToolChoice(choice or "auto")
    return ToolUse(specs, neutral, parallel=parallel_tool_calls is not False)
