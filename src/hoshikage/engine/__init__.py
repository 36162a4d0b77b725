"""The only package that talks to llama.cpp. Everything else uses these names."""

from hoshikage.engine.engine import Engine, LoadOptions, default_threads
from hoshikage.engine.generation import Generation
from hoshikage.engine.types import (
    BackendUnavailableError,
    ChatMessage,
    ContextOverflowError,
    EmbeddingResult,
    EngineError,
    EngineUnavailableError,
    FinishEvent,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    Timings,
    TokenEvent,
    UnsupportedFormatError,
    Usage,
)

__all__ = [
    "BackendUnavailableError",
    "ChatMessage",
    "ContextOverflowError",
    "EmbeddingResult",
    "Engine",
    "EngineError",
    "EngineUnavailableError",
    "FinishEvent",
    "Generation",
    "LoadOptions",
    "ModelInfo",
    "PreparedPrompt",
    "SamplingParams",
    "Timings",
    "TokenEvent",
    "UnsupportedFormatError",
    "Usage",
    "default_threads",
]
