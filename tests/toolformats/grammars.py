"""Asking llama.cpp's grammar sampler itself whether a GBNF grammar accepts a text."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import llama_cpp

from hoshikage.engine.model import LlamaModel
from hoshikage.engine.sampling import Candidates


@contextmanager
def grammar_sampler(model: LlamaModel, gbnf: str) -> Iterator[Any]:
    sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, gbnf.encode("utf-8"), b"root")
    assert sampler, "llama.cpp does not parse the grammar"
    try:
        yield sampler
    finally:
        llama_cpp.llama_sampler_free(sampler)


class GrammarChecker:
    """Feeds a text byte by byte (as single-byte tokens) to a grammar, asking before each
    byte whether the grammar allows it, and at the end whether it may stop there."""

    def __init__(self, model: LlamaModel) -> None:
        self._model = model
        self._candidates = Candidates()
        self._bytes: dict[int, int] = {}
        for token in range(model.n_vocab):
            piece = model.token_bytes(token, special=True)
            if len(piece) == 1 and not model.is_end_of_generation(token):
                self._bytes.setdefault(piece[0], token)
            if len(self._bytes) == 256:
                break
        self._end = model.end_of_generation_tokens[0]

    def compiles(self, gbnf: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(
            self._model.vocab, gbnf.encode("utf-8"), b"root"
        )
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    def accepts(self, gbnf: str, text: str) -> bool:
        """The grammar allows `text`, whole, and nothing more needs to follow it."""
        return self.refused_at(gbnf, text) is None

    def refused_at(self, gbnf: str, text: str) -> int | None:
        """The index of the first byte the grammar refuses (len for an unfinished text), or
        None when it accepts the text whole."""
        data = text.encode("utf-8")
        with grammar_sampler(self._model, gbnf) as sampler:
            for index, byte in enumerate(data):
                token = self._bytes[byte]
                if not self._candidates.allows(sampler, token):
                    return index
                llama_cpp.llama_sampler_accept(sampler, token)
            if not self._candidates.allows(sampler, self._end):
                return len(data)
        return None
