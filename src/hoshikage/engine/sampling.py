"""Sampler chains built from request parameters, in llama.cpp's own order."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import llama_cpp

from hoshikage.engine.model import LlamaModel
from hoshikage.engine.types import EngineError, SamplingParams


class Sampler:
    """One request's llama.cpp sampler chain: penalties, then top-k/top-p/min-p, temperature, draw.

    Each sequence gets its own chain, so its seed, penalties and history are its own.
    """

    def __init__(self, params: SamplingParams, model: LlamaModel) -> None:
        n_vocab = model.n_vocab
        self.seed = params.seed if params.seed is not None else secrets.randbits(31)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chain = chain
        self._penalties: llama_cpp.llama_sampler_p | None = None
        biases = list(params.logit_bias)
        if params.ignore_eos:
            biases += [(token, -math.inf) for token in model.end_of_generation_tokens]
        if biases:
            entries = (llama_cpp.llama_logit_bias * len(biases))()
            for entry, (token, bias) in zip(entries, biases, strict=True):
                entry.token, entry.bias = token, bias
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), entries))
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                model.vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                raise EngineError("the grammar does not parse (GBNF with a 'root' rule expected)")
            self._add(grammar)
        penalised = (
            params.repeat_penalty != 1.0
            or params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
        )
        if penalised and params.repeat_last_n != 0:
            self._penalties = llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                params.repeat_last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
            self._add(self._penalties)
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
        if self._penalties is None:
            return
        for token in tokens:
            llama_cpp.llama_sampler_accept(self._penalties, token)

    def sample(self, context: llama_cpp.llama_context_p, logits_index: int) -> int:
        """Pick the next token from the logits at logits_index; the chain records it."""
        return int(llama_cpp.llama_sampler_sample(self._chain, context, logits_index))

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
