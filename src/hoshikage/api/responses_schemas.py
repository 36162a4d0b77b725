"""Request bodies of OpenAI's Responses API (`/v1/responses`), parsed into the neutral turn."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from hoshikage.api.bounds import CheckedBody, KeepAlive, MaxTokens, Temperature, TopP
from hoshikage.engine import ChatMessage, ToolCall, ToolSpec
from hoshikage.turns.vocabulary import ReasoningOptions, ToolChoice, ToolUse, TurnRequestError


class _Body(CheckedBody):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class FunctionTool(_Body):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Body):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextOptions(_Body):
    format: TextFormat | None = None


class ReasoningIn(_Body):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class ResponsesRequest(_Body):
    """POST /v1/responses."""

    model: str = Field(min_length=1, max_length=300)
    input: str | list[dict[str, Any]] = Field(description="Text, or a list of input items.")
    instructions: str | None = None
    previous_response_id: str | None = Field(None, max_length=200)
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    reasoning: ReasoningIn | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    store: bool = True
    stream: bool = False
    keep_alive: KeepAlive | None = None

    @field_validator("input")
    @classmethod
    def _some_input(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        return value

    def engine_messages(self) -> list[ChatMessage]:
        """The instructions (a system message, not carried on to the next response, as
        OpenAI has it) and the input items."""
        head = [ChatMessage("system", self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*head, ChatMessage("user", self.input)]
        return head + [message for item in self.input for message in _item(item)]

    def tool_use(self) -> ToolUse:
        tools = tuple(
            ToolSpec(tool.name, tool.description or "", tool.parameters or {"type": "object"})
            for tool in self.tools or ()
        )
        choice = self.tool_choice
        if isinstance(choice, NamedFunction):
            neutral = ToolChoice.function(choice.name)
        else:
            neutral = ToolChoice(choice or "auto")
        return ToolUse(tools, neutral, parallel=self.parallel_tool_calls is not False)

    def reasoning_options(self) -> ReasoningOptions:
        effort = self.reasoning.effort if self.reasoning else None
        return ReasoningOptions(think=None if effort is None else effort not in ("none", "minimal"))


def _item(item: dict[str, Any]) -> list[ChatMessage]:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise _bad(
                f"an input message's role is user, system, developer or assistant, not {role!r}"
            )
        return [ChatMessage("system" if role == "developer" else role, _text(item.get("content")))]
    if kind == "function_call":
        call = ToolCall(
            str(item.get("call_id", "")),
            str(item.get("name", "")),
            str(item.get("arguments", "{}")),
        )
        if not call.id or not call.name:
            raise _bad("a function_call item needs call_id and name")
        return [ChatMessage("assistant", "", tool_calls=(call,))]
    if kind == "function_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _bad("a function_call_output item needs the call_id it answers")
        output = item.get("output", "")
        return [
            ChatMessage(
                "tool", output if isinstance(output, str) else _text(output), tool_call_id=call_id
            )
        ]
    if kind == "reasoning":
        return []  # thinking of an earlier response: not replayed
    raise _bad(f"input items of type {kind!r} are not supported")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in (
                "input_text",
                "output_text",
                "text",
            ):
                raise _bad("only text content parts are supported (the models here read text)")
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    raise _bad("a message needs text content")


def _bad(message: str) -> TurnRequestError:
    return TurnRequestError(message, param="input")
