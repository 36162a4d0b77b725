"""What every format's parser shares: a buffer of undecided text, pieces out, and markers.

A parser is a little state machine over its buffer. `_step` looks at the buffer's start and
either consumes some of it (saying what it was) or waits for more; at the end of the answer
(`_final`) nothing waits, and `_close` settles whatever is still open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from hoshikage.toolformats.base import CallArguments, CallBegin, CallEnd, Piece, TextPiece
from hoshikage.toolformats.jsonscan import JsonScanner

WHITESPACE = " \t\n\r"

# Whether a buffer starts with a literal: yes, no, or cannot tell yet (it is a prefix of it).
Start = Literal["yes", "no", "wait"]


def starts(buffer: str, literal: str, final: bool) -> Start:
    if buffer.startswith(literal):
        return "yes"
    if not final and literal.startswith(buffer):
        return "wait"
    return "no"


def first_marker(buffer: str, markers: Sequence[str]) -> tuple[int, str] | None:
    """The earliest marker in the buffer (the longest where several start there)."""
    best: tuple[int, str] | None = None
    for marker in markers:
        index = buffer.find(marker)
        if index < 0:
            continue
        if best is None or index < best[0] or (index == best[0] and len(marker) > len(best[1])):
            best = (index, marker)
    return best


def undecided_tail(buffer: str, markers: Sequence[str]) -> int:
    """How many characters at the buffer's end could be the start of a marker: those are held
    back, the rest is text."""
    longest = 0
    for marker in markers:
        for length in range(min(len(marker) - 1, len(buffer)), longest, -1):
            if buffer.endswith(marker[:length]):
                longest = length
                break
    return longest


def merge(pieces: list[Piece]) -> list[Piece]:
    """Adjacent text pieces joined, and adjacent argument pieces; empty ones dropped."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, TextPiece | CallArguments) and not piece.text:
            continue
        last = merged[-1] if merged else None
        if isinstance(piece, TextPiece) and isinstance(last, TextPiece):
            merged[-1] = TextPiece(last.text + piece.text)
        elif isinstance(piece, CallArguments) and isinstance(last, CallArguments):
            merged[-1] = CallArguments(last.text + piece.text)
        else:
            merged.append(piece)
    return merged


class StreamParser:
    """The buffer and output of a parser; subclasses write `_step` (and `_close`)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._out: list[Piece] = []
        self._final = False

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        self._run()
        return self._take()

    def finish(self) -> list[Piece]:
        self._final = True
        self._run()
        self._close()
        if self._buffer:  # a format's states leave nothing behind; this is a safety net
            self._text(self._buffer)
            self._buffer = ""
        return self._take()

    def _run(self) -> None:
        while self._step():
            pass

    def _step(self) -> bool:
        """Decide something at the buffer's start; False when nothing more can be decided
        now (more text is needed, or the buffer is empty)."""
        raise NotImplementedError

    def _close(self) -> None:
        """The answer ended with the buffer empty: settle what is still open."""

    # --- output -------------------------------------------------------------------------
    def _text(self, text: str) -> None:
        if text:
            self._out.append(TextPiece(text))

    def _call(self, name: str, arguments: str) -> None:
        """A whole call at once."""
        self._out += [CallBegin(name), CallArguments(arguments), CallEnd()]

    def _text_until(self, markers: Sequence[str]) -> str | None:
        """Pass on the buffer's text up to the first marker and return that marker (left at
        the buffer's start); with none, pass on all but what could begin one, and return
        None."""
        found = first_marker(self._buffer, markers)
        if found is not None:
            self._text(self._consume(found[0]))
            return found[1]
        keep = 0 if self._final else undecided_tail(self._buffer, markers)
        self._text(self._consume(len(self._buffer) - keep))
        return None

    def _begin_arguments(self, name: str) -> JsonScanner | None:
        """At an arguments object's first character (whitespace before it skipped): the call
        begins, and the scanner that passes its arguments on; None when no object begins
        here."""
        if not self._buffer.startswith("{"):
            return None
        self._out.append(CallBegin(name))
        return JsonScanner(object_only=True)

    def _stream_arguments(self, scanner: JsonScanner) -> str:
        """Pass on the arguments in the buffer: "done" (the call ended, CallEnd sent),
        "failed" (the call ended at a character that cannot be JSON) or "more"."""
        count, text = scanner.feed(self._buffer)
        self._consume(count)
        self._out.append(CallArguments(text))
        if scanner.done:
            self._out.append(CallEnd())
            return "done"
        if scanner.failed:
            self._out += [CallArguments(scanner.end()), CallEnd()]
            return "failed"
        return "more"

    def _end_arguments(self, scanner: JsonScanner) -> None:
        """The answer ended inside the arguments: close them."""
        self._out += [CallArguments(scanner.end()), CallEnd()]

    def _consume(self, count: int) -> str:
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken

    def _skip_whitespace(self, chars: str = WHITESPACE) -> str:
        """Consume the whitespace (or `chars`) at the buffer's start; what was consumed."""
        stripped = self._buffer.lstrip(chars)
        skipped = self._buffer[: len(self._buffer) - len(stripped)]
        self._buffer = stripped
        return skipped

    def _take(self) -> list[Piece]:
        pieces, self._out = merge(self._out), []
        return pieces
