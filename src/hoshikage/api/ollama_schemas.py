"""Ollama API bodies, field for field as Ollama's server and the official `ollama` client use them.

Requests are validated strictly (a string where a number belongs is a 400, as in Ollama's Go
server), but unknown fields are kept and only logged: Ollama ignores fields it does not know,
and clients written for newer Ollama versions send some.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from hoshikage.api.bounds import (
    ContextTokens,
    Dimensions,
    KeepAlive,
    MinP,
    NumPredict,
    Penalty,
    RepeatLastN,
    RepeatPenalty,
    Seed,
    StopList,
    Temperature,
    TokenId,
    TopK,
    TopP,
)
from hoshikage.api.tool_schemas import NamedToolChoice, ToolIn
from hoshikage.engine.logprobs import MAX_TOP_LOGPROBS

T = TypeVar("T")
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)]

# What GET /api/version reports: tools compare it against the Ollama release that added a
# feature (structured outputs came in 0.5.0), and everything up to this one is implemented.
OLLAMA_COMPATIBLE_VERSION = "0.6.0"

# Options Ollama accepts that change nothing here (load-time knobs are server settings; the
# rest are samplers llama.cpp dropped or Hoshikage does not chain). Ignored with a note.
IGNORED_OPTIONS = frozenset(
    {
        "numa",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "num_keep",
        "tfs_z",
        "typical_p",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
    }
)


def _integral(value: Any) -> Any:
    # JSON decoders in some languages write every number as a float (5.0): accept whole ones.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _model_or_name(data: Any) -> Any:
    # Older clients (and Ollama's own docs of some routes) send "name" instead of "model".
    if isinstance(data, dict) and "model" not in data and "name" in data:
        return {**data, "model": data["name"]}
    return data


def _format(value: Any) -> Any:
    # One clear message instead of one per member of the union.
    if value is None or value in ("", "json") or isinstance(value, dict):
        return value
    raise ValueError('format must be "json" or a JSON schema (an object)')


def _texts(value: Any) -> Any:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    ):
        return value
    raise ValueError("input must be a string or a list of strings")


Whole = Annotated[T, BeforeValidator(_integral)]  # a bounded int that may come as 5.0
Format = Annotated[Literal["", "json"] | dict[str, Any] | None, BeforeValidator(_format)]
Texts = Annotated[str | list[str], BeforeValidator(_texts)]


class OllamaBody(BaseModel):
    """Strict types, no NaN or infinity, unknown fields kept (in model_extra) to be logged."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    @property
    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class ModelRequest(OllamaBody):
    """A request that names one model."""

    model: str = Field(description="A registered model name or alias.")

    @model_validator(mode="before")
    @classmethod
    def _accept_name(cls, data: Any) -> Any:
        return _model_or_name(data)

    @field_validator("model")
    @classmethod
    def _model_given(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model is required")
        return value


class Options(OllamaBody):
    """Sampling options; load-time ones come from the server settings."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Whole[TopK] | None = None
    min_p: MinP | None = None
    repeat_penalty: RepeatPenalty | None = None
    repeat_last_n: Whole[RepeatLastN] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Whole[Seed] | None = Field(None, description="Negative: a random seed.")
    num_predict: Whole[NumPredict] | None = None
    stop: StopList | None = None
    num_ctx: Whole[ContextTokens] | None = Field(
        None, description="Noted only: the context size is a server setting."
    )

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str] | None) -> list[str] | None:
        if value and any(not item for item in value):
            raise ValueError("stop strings must not be empty")
        return value


class FunctionCall(OllamaBody):
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallIn(OllamaBody):
    function: FunctionCall
    id: str | None = Field(None, max_length=200)


class Message(OllamaBody):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=128)
    tool_name: str | None = Field(None, max_length=256)
    tool_call_id: str | None = Field(None, max_length=200)
    thinking: str | None = None


class GenerationRequest(ModelRequest):
    """What chat and generate share."""

    stream: bool | None = Field(None, description="Stream NDJSON lines (default true).")
    format: Format = Field(None, description='"json", or a JSON schema the output must match.')
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    think: bool | Literal["high", "medium", "low"] | None = None
    logprobs: bool | None = Field(None, description="Each token's log-probability.")
    top_logprobs: Whole[TopLogprobs] | None = Field(
        None, description="With logprobs: this many most likely tokens at each step."
    )

    @property
    def streaming(self) -> bool:
        return self.stream is not False


class ChatRequest(GenerationRequest):
    messages: list[Message] | None = Field(
        None, description="The conversation; empty: only load (or unload) the model."
    )
    tools: list[ToolIn] | None = Field(None, max_length=128)
    # Hoshikage extras (Ollama has neither): honoured as in the OpenAI API.
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="Hoshikage: auto (default), none, required, or a named function."
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Hoshikage: false allows at most one call per answer."
    )
    session_id: str | None = Field(
        None, description="A stored session (id or name) to continue and save the turn in."
    )
    memory: bool = Field(
        True,
        description="With a session: recall relevant memories and remember this turn "
        "(false opts this turn out of both).",
    )


class GenerateRequest(GenerationRequest):
    prompt: str | None = Field(None, description="Empty: only load (or unload) the model.")
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[Whole[TokenId]] | None = Field(None, max_length=1 << 20)
    raw: bool | None = Field(None, description="Send the prompt as is, without the template.")
    images: list[str] | None = None
    session_id: str | None = Field(
        None, description="A stored session (id or name) to continue and save the turn in."
    )
    memory: bool = Field(
        True,
        description="With a session: recall relevant memories and remember this turn "
        "(false opts this turn out of both).",
    )


class EmbedRequest(ModelRequest):
    input: Texts = Field(description="One text or a list of texts.")
    truncate: bool | None = Field(
        None, description="Cut inputs longer than the model's window (default true)."
    )
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    dimensions: Whole[Dimensions] | None = None


class EmbeddingsRequest(ModelRequest):
    prompt: str | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class PullRequest(ModelRequest):
    model: str = Field(
        description="hf://<owner>/<repo>/<file>.gguf or <owner>/<repo>[:<quantisation>]"
    )
    insecure: bool | None = None
    stream: bool | None = None


class ShowRequest(ModelRequest):
    verbose: bool | None = None


class DeleteRequest(ModelRequest):
    pass


class CopyRequest(OllamaBody):
    source: str
    destination: str

    @field_validator("source", "destination")
    @classmethod
    def _given(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("a model name is required")
        return value


# --- responses (for the API docs; the routes write the same fields) ---------------------------
class ErrorResponse(BaseModel):
    error: str


class VersionResponse(BaseModel):
    version: str
    hoshikage: str


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class ListedModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(BaseModel):
    models: list[ListedModel]


class RunningModel(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class PsResponse(BaseModel):
    models: list[RunningModel]


class ShowResponse(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    license: str | None = None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Done(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = Field(None, description="Nanoseconds.")
    load_duration: int | None = Field(None, description="Nanoseconds.")
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = Field(None, description="Nanoseconds.")
    eval_count: int | None = None
    eval_duration: int | None = Field(None, description="Nanoseconds.")


class ChatResponse(_Done):
    message: ResponseMessage


class GenerateResponse(_Done):
    response: str


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsResponse(BaseModel):
    embedding: list[float]


class ProgressResponse(BaseModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class StatusResponse(BaseModel):
    status: str
