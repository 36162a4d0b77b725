"""Sampler chains built from request parameters, in llama.cpp's own order.

Logit biases and repetition penalties are applied here, in place on the step's logits, to
the few tokens they concern. llama.cpp's own penalties sampler visits every token of the
vocabulary at every step (a hash lookup each): with a 152k-token vocabulary that is several
milliseconds per token per sequence, more than a tenth of a small model's decode time.
"""

from __future__ import annotations

import collections
import math
import secrets
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from hoshikage.engine.model import LlamaModel
from hoshikage.engine.types import EngineError, SamplingParams


class Sampler:
    """One request's llama.cpp sampler chain: penalties, then top-k/top-p/min-p, temperature, draw.

    Each sequence gets its own chain, so its seed, penalties and history are its own.
    """

    def __init__(self, params: SamplingParams, model: LlamaModel, n_ctx: int) -> None:
        n_vocab = model.n_vocab
        # llama.cpp reads the seed as a uint32: any integer maps into that range.
        self.seed = params.seed % 2**32 if params.seed is not None else secrets.randbits(31)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chain = chain
        biases = list(params.logit_bias)
        if params.ignore_eos:
            biases += [(token, -math.inf) for token in model.end_of_generation_tokens]
        # Tokens outside the vocabulary have no logit to bias (llama.cpp ignores them too).
        self._biases = [(token, bias) for token, bias in biases if 0 <= token < n_vocab]
        penalised = (
            params.repeat_penalty != 1.0
            or params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
        )
        window = repeat_window(params.repeat_last_n, n_ctx)
        self._penalties = Penalties(params, window) if penalised and window else None
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                model.vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                raise EngineError("the grammar does not parse (GBNF with a 'root' rule expected)")
            self._add(grammar)
        # Greedy with no grammar is the argmax of the logits: read in place with NumPy rather
        # than copied into llama.cpp's candidate array of the whole vocabulary first.
        self._n_vocab = n_vocab
        self._argmax = params.greedy and params.grammar is None
        if params.greedy:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            self._add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(params.temperature))
        self._add(llama_cpp.llama_sampler_init_dist(self.seed))

    def _add(self, sampler: llama_cpp.llama_sampler_p) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def remember(self, tokens: Sequence[int]) -> None:
        """Let the penalties see tokens that were not sampled here (the prompt).

        Only the penalties: a grammar fed the prompt would think the answer had begun.
        """
        if self._penalties is not None:
            for token in tokens[-self._penalties.window :]:
                self._penalties.accept(token)

    def sample(self, context: llama_cpp.llama_context_p, logits_index: int) -> int:
        """Pick the next token from the logits at logits_index; the chain records it."""
        logits = llama_cpp.llama_get_logits_ith(context, logits_index)
        for token, bias in self._biases:  # llama.cpp's order: biases, then penalties
            logits[token] += bias
        if self._penalties is not None:
            self._penalties.apply(logits)
        if self._argmax:
            # The first of equal maxima, as llama.cpp's greedy sampler takes.
            token = int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())
        else:
            token = int(llama_cpp.llama_sampler_sample(self._chain, context, logits_index))
        if self._penalties is not None:
            self._penalties.accept(token)
        return token

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def repeat_window(repeat_last_n: int, n_ctx: int) -> int:
    """Tokens the penalties look back over: -1 (or any negative) is the whole window, and no
    request looks further back than its context holds."""
    return n_ctx if repeat_last_n < 0 else min(repeat_last_n, n_ctx)


class Penalties:
    """Repetition, frequency and presence penalties over the last `window` tokens,
    with llama.cpp's arithmetic (penalties.apply in llama-sampler.cpp)."""

    def __init__(self, params: SamplingParams, window: int) -> None:
        self._repeat = params.repeat_penalty
        self._frequency = params.frequency_penalty
        self._presence = params.presence_penalty
        self.window = window
        self._window: collections.deque[int] = collections.deque(maxlen=window)
        self._counts: collections.Counter[int] = collections.Counter()

    def accept(self, token: int) -> None:
        window = self._window
        if window.maxlen is not None and len(window) == window.maxlen:
            oldest = window[0]
            self._counts[oldest] -= 1
            if not self._counts[oldest]:
                del self._counts[oldest]
        window.append(token)
        self._counts[token] += 1

    def apply(self, logits: Any) -> None:
        for token, count in self._counts.items():
            logit = logits[token]
            logit = logit * self._repeat if logit <= 0 else logit / self._repeat
            logits[token] = logit - count * self._frequency - self._presence
