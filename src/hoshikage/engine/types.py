"""The engine's public vocabulary: requests in, events out. No llama.cpp here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


class EngineError(RuntimeError):
    """Something the engine cannot do; the message says what and how to fix it."""


class UnsupportedFormatError(EngineError):
    """The file is not a GGUF model."""


class BackendUnavailableError(EngineError):
    """The requested GPU backend is not compiled into this llama.cpp build."""


class EngineUnavailableError(EngineError):
    """The engine's thread has stopped: nothing it held will finish. The model is reloaded."""


class ContextOverflowError(EngineError):
    """A prompt cannot fit the context window even after dropping history."""

    def __init__(
        self, message: str, *, n_prompt_tokens: int, n_ctx: int, input_name: str = "messages"
    ) -> None:
        super().__init__(message)
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx
        self.input_name = input_name  # what was too long: "messages", "prompt", "input"


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it does, and a JSON Schema of its
    arguments (an object schema)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: an id that its result answers, the function, and the
    arguments as JSON text of an object (as OpenAI carries them)."""

    id: str
    name: str
    arguments: str = "{}"

    def arguments_object(self) -> dict[str, Any]:
        """The arguments parsed; {} for text that is not a JSON object (a model's slip)."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, in no wire format's shape.

    An assistant message may carry `tool_calls` (and `reasoning`, its thinking, which is
    never part of `content`); a tool message answers the call `tool_call_id`, of the tool
    `name`.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop. temperature 0 means greedy."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias); -inf bans a token
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)
    grammar: str | None = None  # GBNF the output must follow (see engine.grammar)
    # With triggers, the grammar is lazy: free text until one of these regular expressions
    # matches the output, constrained from the match on (a tool call's opening marker).
    grammar_triggers: tuple[str, ...] = ()
    # Log-probabilities of each sampled token: None off, 0 the token's own, n also the n
    # most likely tokens at its step.
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Seconds measured by the engine thread for one request."""

    queued_s: float
    time_to_first_token_s: float
    prompt_eval_s: float
    decode_s: float
    total_s: float
    prompt_tokens_evaluated: int
    decode_tokens: int

    @property
    def prefill_tokens_per_s(self) -> float:
        return _rate(self.prompt_tokens_evaluated, self.prompt_eval_s)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first over the time after the first, as llama.cpp reports tg."""
        return _rate(self.decode_tokens, self.decode_s)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 and count > 0 else 0.0


@dataclass(frozen=True)
class Candidate:
    token: int
    text: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability, and the most likely tokens at its step."""

    chosen: Candidate
    top: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """A piece of answer text; may be empty of text while a stop string is still undecided.
    With logprobs asked for, the log-probabilities of the tokens sampled since the last
    event (text held back for a stop string comes later, its tokens' logprobs with it)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    dropped_messages: int = 0


@dataclass(frozen=True)
class ErrorEvent:
    message: str
    unavailable: bool = False  # the engine stopped (not this request's fault): a 503


Event = TokenEvent | FinishEvent | ErrorEvent


@dataclass(frozen=True)
class PreparedPrompt:
    """Tokens ready for the scheduler, with what was dropped to make them fit."""

    tokens: list[int]
    dropped_messages: int = 0
    max_new_tokens: int = 0
    prompt_tail: str = ""  # the rendered prompt's end: did the template open a thinking block?


@dataclass(frozen=True)
class EmbeddingResult:
    """One L2-normalised vector per input, and how many tokens the inputs had."""

    vectors: list[list[float]]
    prompt_tokens: int


@dataclass
class ModelInfo:
    """What the engine knows about a loaded model, for status displays."""

    path: str
    name: str
    architecture: str
    n_params: int
    size_bytes: int
    n_ctx_train: int
    n_ctx: int
    n_layer: int
    n_gpu_layers: int
    backend: str
    load_seconds: float
    chat_template_source: str
    embedding: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
