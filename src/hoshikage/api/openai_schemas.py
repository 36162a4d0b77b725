"""Request bodies of the OpenAI-compatible routes, with OpenAI's bounds.

Unknown fields are ignored with a logged warning (clients send newer fields all the time);
fields we know but cannot honour, and that would change the answer's meaning if ignored
(`n > 1`, tools, logprobs, image input …), are refused with a 400 that names the field.
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
from hoshikage.engine import ChatMessage
from hoshikage.engine.types import Role

log = logging.getLogger("hoshikage.api.openai")

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request


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
            "parallel_tool_calls",
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
    n: int | None = Field(None, description="Choices to return; only 1 is supported.")
    # llama.cpp extras
    top_k: TopK | None = None
    min_p: MinP | None = None
    repeat_penalty: RepeatPenalty | None = None
    repeat_last_n: RepeatLastN | None = None
    ignore_eos: bool = Field(False, description="llama.cpp: keep generating past end-of-text.")
    # Hoshikage extras
    keep_alive: KeepAlive | None = None
    response_format: ResponseFormat | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise unsupported(
                "n={n} is not supported: one choice per request (send several requests)",
                n=value,
            )
        return value

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


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="developer is treated as system."
    )
    content: str | list[ContentPart] | None = Field(
        None, description="Text, or a list of text parts (joined by newlines)."
    )
    name: str | None = None
    tool_calls: list[Any] | None = Field(None, description="Not supported (no tool calling).")
    tool_call_id: str | None = None

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

    @field_validator("tool_calls")
    @classmethod
    def _no_tool_calls(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise unsupported("tool calls are not supported by this server")
        return value

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessageIn:
        if self.content is None and self.role != "assistant":
            raise unsupported("a {role} message needs content", role=self.role)
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content)

    def to_engine(self) -> ChatMessage:
        role: Role = "system" if self.role == "developer" else self.role
        return ChatMessage(role, self.text())


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessageIn] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: MaxTokens | None = Field(
        None, description="Most tokens to generate; wins over max_tokens."
    )
    logprobs: bool | None = Field(None, description="Not supported; false or absent only.")
    top_logprobs: int | None = Field(None, description="Not supported.")
    tools: list[Any] | None = Field(None, description="Not supported; absent or empty only.")
    tool_choice: Any = Field(None, description="Only 'none' or 'auto' (with no tools).")
    functions: list[Any] | None = Field(None, description="Not supported (deprecated).")
    function_call: Any = Field(None, description="Only 'none' or 'auto'.")
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

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise unsupported("logprobs are not supported by this server")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise unsupported("top_logprobs is not supported by this server")
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise unsupported("tool and function calling are not supported by this server yet")
        return value

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_forced_tool(cls, value: Any) -> Any:
        if value not in (None, "none", "auto"):
            raise unsupported("tool and function calling are not supported by this server yet")
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


# --- completions ------------------------------------------------------------------------------
PromptInput = Annotated[
    str | list[str] | list[int] | list[list[int]],
    Field(description="The prompt: one string (or a list holding one string)."),
]


class CompletionRequest(SamplingFields):
    """POST /v1/completions (the legacy text completion)."""

    prompt: PromptInput
    echo: bool = Field(False, description="Return the prompt followed by the completion.")
    suffix: str | None = Field(None, description="Not supported (no insertion).")
    best_of: int | None = Field(None, description="Only 1.")
    logprobs: int | None = Field(None, description="Not supported; 0 or absent only.")

    @field_validator("prompt")
    @classmethod
    def _one_text_prompt(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(value, str):
            return value
        if not value:
            raise unsupported("prompt must not be empty")
        if not all(isinstance(item, str) for item in value):
            raise unsupported("token-array prompts are not supported: send the prompt as text")
        if len(value) != 1:
            raise unsupported(
                "one prompt per request is supported, not {count} (send several requests)",
                count=len(value),
            )
        return value

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

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise unsupported("logprobs are not supported by this server")
        return value

    @property
    def prompt_text(self) -> str:
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        first = prompt[0]
        assert isinstance(first, str)  # the validator refused everything else
        return first

    @property
    def answer_limit(self) -> int | None:
        return self.max_tokens


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
    def _texts(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise unsupported("input must not be empty")
        if not all(isinstance(item, str) for item in items):
            raise unsupported("token-array inputs are not supported: send the text")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise unsupported(
                "at most {limit} inputs per request, not {count}",
                limit=MAX_EMBEDDING_INPUTS,
                count=len(items),
            )
        if any(not item for item in items):
            raise unsupported("an input is empty; every input needs some text")
        return value

    @property
    def texts(self) -> list[str]:
        value = self.input
        return [value] if isinstance(value, str) else [str(item) for item in value]
