"""Request bodies of the OpenAI-compatible routes, with OpenAI's bounds.

Unknown fields are ignored with a logged warning (clients send newer fields all the time);
fields we know but cannot honour, and that would change the answer's meaning if ignored
(image input, audio …), are refused with a 400 that names the field.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from hoshikage.api.bounds import (
    BIAS_LIMIT,
    MAX_LOGIT_BIASES,
    CheckedBody,
    Dimensions,
    KeepAlive,
    MaxTokens,
    MinP,
    OneOrMoreStops,
    Penalty,
    RepeatLastN,
    RepeatPenalty,
    Seed,
    Temperature,
    TopK,
    TopP,
)
from hoshikage.api.tool_schemas import NamedToolChoice, ToolIn, tool_use
from hoshikage.engine import ChatMessage, ToolCall
from hoshikage.engine.logprobs import MAX_TOP_LOGPROBS
from hoshikage.engine.types import Role
from hoshikage.turns.vocabulary import ReasoningOptions, ToolUse

log = logging.getLogger("hoshikage.api.openai")

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request
MAX_CHOICES = 16  # n; the model's parallel setting bounds it further


def unsupported(message: str, **context: Any) -> PydanticCustomError:
    """A validation error that reads as a sentence (no 'Value error,' prefix)."""
    return PydanticCustomError("unsupported", message, context)


class OpenAIRequest(CheckedBody):
    """Base of every request body: unknown fields are logged and ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)

    # OpenAI fields accepted without effect here (no warning: they change nothing visible).
    accepted_without_effect: ClassVar[frozenset[str]] = frozenset(
        {
            "store",
            "metadata",
            "service_tier",
            "safety_identifier",
            "prompt_cache_key",
            "prompt_cache_retention",
        }
    )

    @model_validator(mode="before")
    @classmethod
    def _warn_about_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = [
                key for key in data if key not in known and key not in cls.accepted_without_effect
            ]
            if unknown:
                log.warning(
                    "%s: ignoring unknown fields %s",
                    cls.__name__,
                    ", ".join(repr(str(key)[:64]) for key in unknown[:20]),
                )
        return data


# --- shared sampling fields ------------------------------------------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = Field(
        None, description="Send a last chunk, with empty choices, that carries the usage."
    )
    include_obfuscation: bool | None = Field(
        None, description="Accepted for compatibility; chunks are never padded here."
    )


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str | None = Field(None, max_length=64, description="Name of the schema.")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="JSON Schema the answer must follow."
    )
    strict: bool | None = Field(
        None, description="Accepted; output always follows the schema (grammar-enforced)."
    )


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = Field(
        description="text: free text; json_object: any JSON object; json_schema: JSON "
        "valid under json_schema.schema. Enforced by a grammar while sampling."
    )
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise unsupported("response_format of type json_schema needs a json_schema object")
        return self


class SamplingFields(OpenAIRequest):
    """What /chat/completions and /completions share: sampling, stopping, Hoshikage extras."""

    model: str = Field(
        min_length=1,
        max_length=300,
        description="A registered model name (see GET /v1/models). Paths are never opened.",
    )
    stream: bool = Field(False, description="Stream the answer as server-sent events.")
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = Field(
        None, description="Most tokens to generate (default: until done or context full)."
    )
    temperature: Temperature | None = None
    top_p: TopP | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = Field(
        None,
        max_length=MAX_LOGIT_BIASES,
        description=f"Token id (as a string) to a bias from -100 to 100; -100 bans the token "
        f"(at most {MAX_LOGIT_BIASES} entries).",
    )
    seed: Seed | None = None
    stop: OneOrMoreStops | None = None
    user: str | None = Field(
        None,
        max_length=256,
        description="End-user id: the log, and whose memory a session's turns use (within "
        "the API key's).",
    )
    n: int | None = Field(
        None,
        ge=1,
        le=MAX_CHOICES,
        description="Choices to return (the prompt is evaluated once; each choice needs one "
        "of the model's parallel slots).",
    )
    # llama.cpp extras
    top_k: TopK | None = None
    min_p: MinP | None = None
    repeat_penalty: RepeatPenalty | None = None
    repeat_last_n: RepeatLastN | None = None
    ignore_eos: bool = Field(False, description="llama.cpp: keep generating past end-of-text.")
    # Hoshikage extras
    keep_alive: KeepAlive | None = None
    response_format: ResponseFormat | None = None

    @property
    def choices(self) -> int:
        return self.n or 1

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.strip().isdigit() or int(key) >= 2**31:
                raise unsupported(
                    "logit_bias keys are token ids (non-negative integers), not '{key}'",
                    key=key[:40],
                )
            if not -BIAS_LIMIT <= bias <= BIAS_LIMIT:
                raise unsupported(
                    "logit_bias values lie between -100 and 100, not {bias}", bias=bias
                )
        return value

    def stop_strings(self) -> list[str] | None:
        """The stop strings given (empty ones dropped), or None when none were given."""
        if self.stop is None:
            return None
        return [item for item in self.stop if item]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# --- chat ------------------------------------------------------------------------------------
class ContentPart(BaseModel):
    """A part of a message's content; only text parts are supported."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="'text' (image, audio and file parts are refused).")
    text: str | None = None


_PART_KINDS = {
    "image_url": "image input",
    "input_image": "image input",
    "input_audio": "audio input",
    "file": "file input",
}


class FunctionCallIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field("{}", description="The arguments, as JSON text of an object.")


class ToolCallIn(BaseModel):
    """A call an earlier assistant message made."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="developer is treated as system."
    )
    content: str | list[ContentPart] | None = Field(
        None, description="Text, or a list of text parts (joined by newlines)."
    )
    name: str | None = Field(None, max_length=256)
    tool_calls: list[ToolCallIn] | None = Field(
        None, max_length=128, description="The calls an assistant message made."
    )
    tool_call_id: str | None = Field(
        None, max_length=200, description="On a tool message: the call it answers."
    )
    reasoning_content: str | None = Field(
        None, description="An assistant message's thinking, as this server returned it."
    )

    @field_validator("content")
    @classmethod
    def _text_parts_only(
        cls, value: str | list[ContentPart] | None
    ) -> str | list[ContentPart] | None:
        for part in value if isinstance(value, list) else []:
            if part.type in ("text", "input_text"):
                if part.text is None:
                    raise unsupported("a text content part needs a 'text' string")
                continue
            kind = _PART_KINDS.get(part.type, f"content parts of type {part.type[:40]!r}")
            raise unsupported(
                "{kind} is not supported: the models served here read text only", kind=kind
            )
        return value

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessageIn:
        if self.content is None and self.role != "assistant":
            raise unsupported("a {role} message needs content", role=self.role)
        if self.role == "tool" and not self.tool_call_id:
            raise unsupported("a tool message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise unsupported("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content)

    def to_engine(self) -> ChatMessage:
        role: Role = "system" if self.role == "developer" else self.role
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments)
            for call in self.tool_calls or ()
        )
        return ChatMessage(
            role,
            self.text(),
            tool_calls=calls,
            tool_call_id=self.tool_call_id if role == "tool" else None,
            name=self.name if role == "tool" else None,
            reasoning=self.reasoning_content if role == "assistant" else None,
        )


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessageIn] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: MaxTokens | None = Field(
        None, description="Most tokens to generate; wins over max_tokens."
    )
    logprobs: bool | None = Field(
        None, description="Return each answer token's log-probability (choices[].logprobs)."
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: the most likely tokens."
    )
    tools: list[ToolIn] | None = Field(None, max_length=128, description="Functions to call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None,
        description="auto (the default with tools): the model decides; none: no calls; "
        "required: at least one call; {type: function, function: {name}}: that function, "
        "forced. Forced calls follow their schema from the first token.",
    )
    parallel_tool_calls: bool | None = Field(
        None, description="false: at most one call per answer (default true)."
    )
    functions: list[Any] | None = Field(None, description="Not supported (deprecated): tools.")
    function_call: Any = Field(None, description="Only 'none' or 'auto'; use tool_choice.")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None,
        description="Thinking models: none or minimal turn the template's thinking off; "
        "the others turn it on.",
    )
    reasoning_format: Literal["none", "auto", "deepseek", "parsed"] | None = Field(
        None,
        description="llama.cpp: none keeps thinking in content, raw; otherwise it is "
        "returned apart as reasoning_content (the default).",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None,
        max_length=32,
        description="llama.cpp/vLLM: extra variables for the chat template; "
        "enable_thinking (bool) switches thinking.",
    )
    modalities: list[str] | None = Field(None, description="Only ['text'].")
    audio: Any = Field(None, description="Not supported.")
    web_search_options: Any = Field(None, description="Not supported.")
    session_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Hoshikage: a session id or name (or header X-Session-Id). The turn is "
        "stored there; a request with a single new message continues its history.",
    )
    memory: bool = Field(
        True,
        description="Hoshikage: with a session, bring relevant memories of other "
        "conversations into the context and remember this turn; false opts this turn out "
        "of both.",
    )

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise unsupported("top_logprobs needs logprobs: true")
        return self

    @property
    def logprobs_wanted(self) -> int | None:
        """None: no logprobs; else how many top candidates each token reports."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("functions")
    @classmethod
    def _no_functions(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise unsupported("functions is deprecated and not supported: send tools instead")
        return value

    @field_validator("function_call")
    @classmethod
    def _no_function_call(cls, value: Any) -> Any:
        if value not in (None, "none", "auto"):
            raise unsupported("function_call is deprecated: send tool_choice instead")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value and any(item != "text" for item in value):
            raise unsupported("only text output is supported (modalities ['text'])")
        return value

    @field_validator("audio", "web_search_options")
    @classmethod
    def _absent(cls, value: Any) -> Any:
        if value is not None:
            raise unsupported("this option is not supported by this server")
        return value

    @property
    def answer_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_messages(self) -> list[ChatMessage]:
        return [message.to_engine() for message in self.messages]

    def tool_use(self) -> ToolUse:
        return tool_use(self.tools, self.tool_choice, self.parallel_tool_calls)

    def reasoning(self) -> ReasoningOptions:
        think: bool | None = None
        if self.reasoning_effort is not None:
            think = self.reasoning_effort not in ("none", "minimal")
        switch = (self.chat_template_kwargs or {}).get("enable_thinking")
        if isinstance(switch, bool):
            think = switch
        return ReasoningOptions(think=think, separate=self.reasoning_format != "none")


# --- completions ------------------------------------------------------------------------------
MAX_PROMPTS = 16  # prompts per request; each is its own generation
PromptInput = Annotated[
    str | list[str] | list[int] | list[list[int]],
    Field(
        description="The prompt: a string, a list of token ids, or a list of either (one "
        f"choice per prompt, at most {MAX_PROMPTS})."
    ),
]


class CompletionRequest(SamplingFields):
    """POST /v1/completions (the legacy text completion)."""

    prompt: PromptInput
    echo: bool = Field(False, description="Return the prompt followed by the completion.")
    suffix: str | None = Field(None, description="Not supported (no insertion).")
    best_of: int | None = Field(None, description="Only 1.")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Each token's log-probability and this many most likely tokens.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompts(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        prompts = _prompts_of(value)
        if not prompts:
            raise unsupported("prompt must not be empty")
        if len(prompts) > MAX_PROMPTS:
            raise unsupported(
                "at most {limit} prompts per request, not {count}",
                limit=MAX_PROMPTS,
                count=len(prompts),
            )
        if any(isinstance(p, list) and not p for p in prompts):
            raise unsupported("a token-id prompt is empty")
        if any(isinstance(p, int) and not 0 <= p < 2**31 for p in _flat(prompts)):
            raise unsupported("token ids are non-negative integers")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or token ids."""
        return _prompts_of(self.prompt)

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise unsupported("suffix (text insertion) is not supported by this server")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise unsupported("best_of={n} is not supported: only 1", n=value)
        return value

    @property
    def answer_limit(self) -> int | None:
        return self.max_tokens


def _prompts_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(item, int) for item in value):
        return [[int(item) for item in value]]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


def _flat(prompts: list[str | list[int]]) -> list[int]:
    return [token for prompt in prompts if isinstance(prompt, list) for token in prompt]


# --- embeddings -------------------------------------------------------------------------------
class EmbeddingRequest(OpenAIRequest):
    """POST /v1/embeddings."""

    model: str = Field(min_length=1, max_length=300, description="A registered embedding model.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description=f"A text or a list of up to {MAX_EMBEDDING_INPUTS} texts."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes."
    )
    dimensions: Dimensions | None = Field(
        None, description="Only the model's own dimension (no shortening)."
    )
    user: str | None = Field(None, max_length=256)
    keep_alive: KeepAlive | None = None

    @field_validator("input")
    @classmethod
    def _inputs(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        items = _prompts_of(value)
        if not items:
            raise unsupported("input must not be empty")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise unsupported(
                "at most {limit} inputs per request, not {count}",
                limit=MAX_EMBEDDING_INPUTS,
                count=len(items),
            )
        if any(not item for item in items):
            raise unsupported("an input is empty; every input needs some text or tokens")
        if any(not 0 <= token < 2**31 for token in _flat(items)):
            raise unsupported("token ids are non-negative integers")
        return value

    @property
    def inputs(self) -> list[str] | list[list[int]]:
        """The texts, or the token-id lists (as LangChain's OpenAIEmbeddings sends them)."""
        items = _prompts_of(self.input)
        if all(isinstance(item, str) for item in items):
            return [str(item) for item in items]
        if all(isinstance(item, list) for item in items):
            return [list(item) for item in items if isinstance(item, list)]
        raise ValueError("mixed text and token inputs")
