"""Tool calls in the formats of model families: streaming parsers, grammars, and prompts.

`detect_format(chat_template)` picks a model's format; its `parser(tools)` turns the
streamed answer into text and calls, `grammar(...)` and `triggers()` constrain the calls,
and `system_prompt(tools)` describes the tools where the template cannot.
"""

from hoshikage.toolformats.base import (
    CallArguments,
    CallBegin,
    CallEnd,
    Piece,
    TextPiece,
    ToolCallParser,
    ToolFormat,
)
from hoshikage.toolformats.registry import FORMAT_NAMES, detect_format, format_named

__all__ = [
    "FORMAT_NAMES",
    "CallArguments",
    "CallBegin",
    "CallEnd",
    "Piece",
    "TextPiece",
    "ToolCallParser",
    "ToolFormat",
    "detect_format",
    "format_named",
]
