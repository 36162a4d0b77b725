"""Command-line options that several commands share, each named after its setting."""

from __future__ import annotations

from typing import Annotated

import typer

EmbeddingModelOpt = Annotated[
    str | None,
    typer.Option(
        help="GGUF embedding model (path or name) for semantic memory.", show_default=False
    ),
]
MemoryOpt = Annotated[
    bool | None,
    typer.Option(
        "--memory/--no-memory",
        help="Long-term memory across conversations (default: on).",
        show_default=False,
    ),
]
