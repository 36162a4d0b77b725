"""The only package that talks to llama.cpp. Everything else uses these names."""

from hoshikage.engine.engine import Engine, LoadOptions, RenderOptions, default_threads
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
    ToolCall,
    ToolSpec,
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
    "RenderOptions",
    "SamplingParams",
    "Timings",
    "TokenEvent",
    "ToolCall",
    "ToolSpec",
    "UnsupportedFormatError",
    "Usage",
    "default_threads",
]
