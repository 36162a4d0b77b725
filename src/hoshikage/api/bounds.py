"""The bounds of every numeric and list field the APIs accept, declared once.

Each wire format (OpenAI, Ollama, and those to come) types its fields with these, so a value
that one API refuses the others refuse too, and every bound shows in /openapi.json. The
bounds are what the engine can honour without harm to other requests: a number past them
would overflow a C integer, allocate without limit, or slow every stream sharing the model.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from hoshikage.config import Duration

MAX_STOP_STRINGS = 16  # OpenAI allows 4; llama.cpp any number: be generous, but bounded
MAX_STOP_CHARS = 256  # one stop string
MAX_GENERATED_TOKENS = 1 << 20  # more than any context window
MAX_TOP_K = 1 << 20  # more than any vocabulary
MAX_REPEAT_WINDOW = 1 << 20  # the engine also clamps it to the context window
MAX_LOGIT_BIASES = 1024
BIAS_LIMIT = 100.0
MAX_DIMENSIONS = 1 << 16
MAX_CONTEXT_TOKENS = 1 << 20  # Ollama's num_ctx and context
MAX_SEED = 2**64 - 1  # OpenAI's seed is an int64, llama.cpp's a uint32: taken modulo 2**32
MAX_TEXT_NESTING = 64  # how deep a request's JSON may nest (a schema is the deepest part)

# OpenAI's range, which llama-cpp-python's server also keeps; past it output is noise.
Temperature = Annotated[
    float, Field(ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
]
TopP = Annotated[float, Field(ge=0.0, le=1.0, description="Nucleus sampling threshold.")]
TopK = Annotated[int, Field(ge=0, le=MAX_TOP_K, description="Keep the k likeliest tokens.")]
MinP = Annotated[float, Field(ge=0.0, le=1.0, description="Drop tokens below min_p × the top.")]
RepeatPenalty = Annotated[
    float, Field(gt=0.0, le=5.0, description="Penalty for repeated tokens (1 = off).")
]
RepeatLastN = Annotated[
    int,
    Field(
        ge=-1,
        le=MAX_REPEAT_WINDOW,
        description="Tokens the repeat penalties look back over; -1: the whole context.",
    ),
]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Seed = Annotated[
    int,
    Field(
        ge=-(2**63),
        le=MAX_SEED,
        description="Sampling seed: the same seed, the same answer (taken modulo 2**32).",
    ),
]
MaxTokens = Annotated[
    int, Field(ge=1, le=MAX_GENERATED_TOKENS, description="Most tokens to generate.")
]
NumPredict = Annotated[
    int,
    Field(
        ge=-2,
        le=MAX_GENERATED_TOKENS,
        description="Most tokens to generate; -1: no limit, -2: fill the context.",
    ),
]
ContextTokens = Annotated[int, Field(ge=1, le=MAX_CONTEXT_TOKENS)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
Dimensions = Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)]
StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StopList = Annotated[
    list[StopString],
    Field(
        max_length=MAX_STOP_STRINGS,
        description=f"A string, or up to {MAX_STOP_STRINGS} strings, of up to "
        f"{MAX_STOP_CHARS} characters that end the answer (not shown).",
    ),
]

# OpenAI also takes one string: made a list first, so that an error reads once, not per member.
OneOrMoreStops = Annotated[StopList, BeforeValidator(_one_or_many)]

# Seconds a model stays loaded: finite, negative for ever, at most ten years (a deadline
# past the calendar's end cannot be written as a timestamp).
MAX_KEEP_ALIVE_S = 10 * 365 * 86400.0


def _bounded_duration(seconds: float) -> float:
    if seconds != seconds or abs(seconds) == float("inf"):
        raise ValueError("keep_alive must be a finite duration")
    if seconds > MAX_KEEP_ALIVE_S:
        raise ValueError("keep_alive is at most ten years; a negative value keeps it for ever")
    return seconds


KeepAlive = Annotated[
    Duration,
    AfterValidator(_bounded_duration),
    Field(
        description="How long the model stays loaded after this request: seconds or a "
        "duration ('5m'); 0 unloads after it, negative keeps it loaded.",
    ),
]


class InvalidTextError(ValueError):
    """Request text that cannot reach a tokenizer: a lone surrogate, or nesting too deep."""


def check_request_text(data: Any) -> None:
    """Refuse a parsed JSON body holding text that is not valid Unicode (a lone surrogate,
    which JSON's \\ud800 escapes can carry) or nested deeper than MAX_TEXT_NESTING.

    Iterative, so a hostile depth cannot exhaust the stack; every key and string is seen.
    """
    pending: deque[tuple[Any, int, str]] = deque([(data, 0, "")])
    while pending:
        value, depth, where = pending.pop()
        if isinstance(value, str):
            _check_text(value, where)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_TEXT_NESTING:
            raise InvalidTextError(
                f"{where or 'the body'} is nested more than {MAX_TEXT_NESTING} levels deep"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(str(key), where)  # before the key is shown in any message
                path = f"{where}.{key}" if where else str(key)
                pending.append((item, depth + 1, path))
        else:
            pending.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError(
            f"{where or 'the body'} is not valid Unicode text (a lone surrogate)"
        ) from None


class CheckedBody(BaseModel):
    """Base of a request body: its text is checked once, whole, before any field is read."""

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        try:
            check_request_text(data)
        except InvalidTextError as exc:
            raise PydanticCustomError("invalid_text", str(exc)) from None
        return data
