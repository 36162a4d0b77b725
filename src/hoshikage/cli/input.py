"""Reading what the user types: prompt_toolkit on a terminal, plain lines from a pipe."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output

BLOCK_FENCE = '"""'
CONTINUATION_PROMPT = "... "


class LineReader(Protocol):
    def read_line(self, prompt: str) -> str:
        """One line (or an Esc+Enter multi-line entry). EOFError at end, KeyboardInterrupt on ^C."""


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


class TerminalReader:
    """Line editing, history across runs (a file in the data dir), Esc+Enter for a new line."""

    def __init__(
        self,
        history_path: Path | None,
        *,
        input: Input | None = None,
        output: Output | None = None,
    ) -> None:
        history: History = InMemoryHistory()
        if history_path is not None:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(history_path))
        self._session: PromptSession[str] = PromptSession(
            history=history, key_bindings=_key_bindings(), input=input, output=output
        )

    def read_line(self, prompt: str) -> str:
        return self._session.prompt(prompt)


class PipeReader:
    """Lines from a non-interactive stream, for scripts: `echo hi | hoshikage chat -m M`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdin

    def read_line(self, prompt: str) -> str:
        line = self._stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


def read_message(reader: LineReader, prompt: str) -> str:
    """A whole message: one line, or a block fenced by triple quotes over several lines."""
    first = reader.read_line(prompt)
    stripped = first.strip()
    if not stripped.startswith(BLOCK_FENCE):
        return first
    body = stripped[len(BLOCK_FENCE) :]
    if body.endswith(BLOCK_FENCE):  # """one line"""
        return body[: -len(BLOCK_FENCE)]
    lines = [body] if body else []
    while True:
        line = reader.read_line(CONTINUATION_PROMPT)
        if line.rstrip().endswith(BLOCK_FENCE):
            last = line.rstrip()[: -len(BLOCK_FENCE)]
            if last:
                lines.append(last)
            return "\n".join(lines)
        lines.append(line)
