"""The wire-neutral vocabulary of a turn: what is asked, and the events of the answer.

Requests: a `TurnRequest` carries the messages (engine `ChatMessage`s, which hold tool
calls, tool results and reasoning), sampling, `ToolUse` (tools, choice, parallel calls),
`ReasoningOptions`, and where the turn belongs (session, namespace, memory).

Events, in order: `TextDelta` and `ReasoningDelta` as the answer streams; for each tool call
a `ToolCallStarted` (stable index and id, name), `ToolCallDelta`s (pieces of its JSON
arguments) and a `ToolCallEnded` (the whole call); then exactly one `TurnFinished`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from hoshikage.conversation.context import ContextReport
from hoshikage.engine.types import (
    ChatMessage,
    EngineError,
    SamplingParams,
    Timings,
    TokenLogprob,
    ToolCall,
    ToolSpec,
    Usage,
)

ChoiceMode = Literal["auto", "none", "required", "function"]
TurnFinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


class TurnRequestError(EngineError):
    """A request that cannot be answered as asked (a 400); `param` names the field at
    fault in neutral terms ("tools", "tool_choice", "messages")."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolChoice:
    """`auto`: the model decides; `none`: no calls; `required`: at least one call;
    `function`: a call to `name`, forced."""

    mode: ChoiceMode = "auto"
    name: str | None = None

    @classmethod
    def function(cls, name: str) -> ToolChoice:
        return cls("function", name)


@dataclass(frozen=True)
class ToolUse:
    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)
    parallel: bool = True  # False: at most one call per answer

    @property
    def active(self) -> bool:
        """Whether the model is offered tools for this answer at all."""
        return bool(self.tools) and self.choice.mode != "none"

    @property
    def forced(self) -> bool:
        return self.active and self.choice.mode in ("required", "function")

    def offered(self) -> tuple[ToolSpec, ...]:
        """The tools a call may use: all of them, or only the one a named choice forces."""
        if self.choice.mode == "function":
            return tuple(tool for tool in self.tools if tool.name == self.choice.name)
        return self.tools


@dataclass(frozen=True)
class ReasoningOptions:
    """`think`: None leaves the template's default, True/False sets its thinking switch
    (`enable_thinking`) where it has one. `separate`: thinking goes to reasoning events
    (False keeps it in the answer text, raw)."""

    think: bool | None = None
    separate: bool = True
    required: bool = False  # a model that cannot think is an error (Ollama's `think`)


@dataclass(frozen=True)
class TurnRequest:
    model: str
    messages: Sequence[ChatMessage]
    params: SamplingParams
    tool_use: ToolUse = field(default_factory=ToolUse)
    reasoning: ReasoningOptions = field(default_factory=ReasoningOptions)
    keep_alive: float | None = None
    session: str | None = None  # a session's id or name: continue it and store the turn
    namespace: str = "local"  # whose memory: an API key's, a `user`'s, or the local user's
    memory: bool = True  # False: recall nothing for this turn and never remember it
    # The session holds the history: `messages` are only what this turn adds (a Responses
    # API request continuing from previous_response_id).
    history_stored: bool = False


# --- events ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    text: str
    # With logprobs asked for: those of the tokens sampled since the last text (tokens of
    # thinking or calls ride with the next text, or with the finish).
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    index: int  # 0, 1, … in the order the calls appear in the answer
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    arguments: str  # the next piece of the call's JSON arguments


@dataclass(frozen=True)
class ToolCallEnded:
    index: int
    call: ToolCall  # the whole call (arguments complete)


@dataclass(frozen=True)
class TurnFinished:
    finish_reason: TurnFinishReason
    text: str  # the answer's text, without thinking or calls
    reasoning: str  # its thinking ("" when none)
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    timings: Timings
    load_s: float = 0.0  # loading the model for this request, if it had to be
    dropped_messages: int = 0
    context: ContextReport | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of every sampled token, when asked for


AnswerEvent = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallDelta | ToolCallEnded
TurnEvent = AnswerEvent | TurnFinished
