"""Request bodies of Anthropic's Messages API (`/v1/messages`), as the `anthropic` SDK sends
them, parsed into the neutral turn.

Unknown fields are ignored (`cache_control`, `service_tier`, `container` …: they change
nothing here); what would change the answer's meaning and cannot be honoured (images,
documents, server tools) is a 400 that says so.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from hoshikage.api.bounds import (
    CheckedBody,
    KeepAlive,
    MaxTokens,
    StopList,
    Temperature,
    TopK,
    TopP,
)
from hoshikage.engine import ChatMessage, ToolCall, ToolSpec
from hoshikage.turns.vocabulary import ReasoningOptions, ToolChoice, ToolUse

log = logging.getLogger("hoshikage.api.anthropic")

_BILLING_LINE = re.compile(r"x-anthropic-billing-header:[^\n]*\n?")


class _Body(CheckedBody):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextBlock(_Body):
    type: Literal["text"]
    text: str


class ThinkingBlock(_Body):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Body):
    type: Literal["redacted_thinking"]
    data: str = ""


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=200)
    content: str | list[TextBlock] = ""
    is_error: bool = False

    def text(self) -> str:
        body = self.content if isinstance(self.content, str) else _joined(self.content)
        return f"Error: {body}" if self.is_error else body


Block = Annotated[
    TextBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock,
    Field(discriminator="type"),
]


class MessageIn(_Body):
    role: Literal["user", "assistant"]
    content: str | list[Block]

    @model_validator(mode="before")
    @classmethod
    def _refuse_other_media(cls, data: Any) -> Any:
        for block in data.get("content") or [] if isinstance(data, dict) else []:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in ("image", "document", "search_result", "container_upload"):
                raise ValueError(f"{kind} blocks are not supported: the models here read text")
        return data

    def to_engine(self) -> list[ChatMessage]:
        """One message, or for a user turn carrying tool results, the results first (each a
        tool message answering its call) and then any text."""
        if isinstance(self.content, str):
            return [ChatMessage(self.role, self.content)]
        texts = [block.text for block in self.content if isinstance(block, TextBlock)]
        if self.role == "assistant":
            calls = tuple(
                ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False))
                for block in self.content
                if isinstance(block, ToolUseBlock)
            )
            thinking = "".join(b.thinking for b in self.content if isinstance(b, ThinkingBlock))
            return [
                ChatMessage(
                    "assistant", "".join(texts), tool_calls=calls, reasoning=thinking or None
                )
            ]
        results = [
            ChatMessage("tool", block.text(), tool_call_id=block.tool_use_id)
            for block in self.content
            if isinstance(block, ToolResultBlock)
        ]
        return [
            *results,
            *([ChatMessage("user", "\n".join(texts))] if texts or not results else []),
        ]


class ToolIn(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(None, max_length=8192)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: str | None = Field(None, description="Only custom (function) tools.")

    @model_validator(mode="after")
    def _custom_only(self) -> ToolIn:
        if self.type not in (None, "custom"):
            raise ValueError(f"server tools ({self.type}) are not supported: define the function")
        return self


class ToolChoiceIn(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, max_length=64)
    disable_parallel_tool_use: bool = False

    @model_validator(mode="after")
    def _named(self) -> ToolChoiceIn:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type tool needs the tool's name")
        return self


class ThinkingIn(_Body):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)


class MetadataIn(_Body):
    user_id: str | None = Field(None, max_length=256)


class CountTokensRequest(_Body):
    """POST /v1/messages/count_tokens: what a message request would put in the prompt."""

    model: str = Field(min_length=1, max_length=300)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolIn] | None = Field(None, max_length=128)
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None

    def engine_messages(self) -> list[ChatMessage]:
        system = self.system if isinstance(self.system, str) else _joined(self.system or [])
        # Claude Code opens its system prompt with a billing line whose `cch=` hash changes on
        # every request; at the very start of the prompt it would defeat KV prefix reuse for
        # all that follows. It means nothing to the model (vLLM and SGLang drop it too).
        system = _BILLING_LINE.sub("", system).strip()
        head = [ChatMessage("system", system)] if system else []
        return head + [m for message in self.messages for m in message.to_engine()]

    def tool_use(self) -> ToolUse:
        tools = tuple(
            ToolSpec(tool.name, tool.description or "", tool.input_schema)
            for tool in self.tools or ()
        )
        choice = self.tool_choice
        if choice is None:
            return ToolUse(tools)
        neutral = {
            "auto": ToolChoice("auto"),
            "any": ToolChoice("required"),
            "none": ToolChoice("none"),
            "tool": ToolChoice.function(choice.name or ""),
        }[choice.type]
        return ToolUse(tools, neutral, parallel=not choice.disable_parallel_tool_use)

    def reasoning(self) -> ReasoningOptions:
        if self.thinking is None or self.thinking.type == "adaptive":
            return ReasoningOptions()
        return ReasoningOptions(think=self.thinking.type == "enabled")


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: MaxTokens = Field(description="Most tokens to generate (required).")
    stream: bool = False
    stop_sequences: StopList | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    metadata: MetadataIn | None = None
    keep_alive: KeepAlive | None = Field(None, description="Hoshikage: how long to stay loaded.")


def _joined(blocks: list[TextBlock]) -> str:
    return "\n".join(block.text for block in blocks)
