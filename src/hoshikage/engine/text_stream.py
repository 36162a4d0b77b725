"""Turning token bytes into safe-to-show text: UTF-8 reassembly and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopMatcher:
    """Holds back text that might be the start of a stop string, so none of it ever leaks.

    ``feed`` returns the text that is now safe to show; once a stop string appears, the text
    before it is returned and ``stopped`` is set. ``flush`` releases what was held back when
    generation ends for another reason.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._pending + text
        # The stop that *ends* first is the one a token-by-token stream would meet first, so
        # pick it (then the earliest start): the output must not depend on chunking.
        hits = [(i + len(s), i) for s in self._stops if (i := buffer.find(s)) >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            return buffer[: min(hits)[1]]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._pending = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        """Length of the longest tail of buffer that begins some stop string."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best


class Utf8Assembler:
    """Token pieces can split a multi-byte character; emit text only when it is whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
