"""Log-probabilities of sampled tokens, from the logits the sampler saw (after logit biases
and repetition penalties, before temperature and truncation, as OpenAI reports them).

Only computed for requests that ask: a pass over the vocabulary per token (a log-sum-exp and
a partial sort for the top candidates), a fraction of a millisecond for 152k tokens.
"""

from __future__ import annotations

import ctypes

import numpy as np

from hoshikage.engine.model import LlamaModel
from hoshikage.engine.types import Candidate, TokenLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's bound


def token_logprob(
    model: LlamaModel, logits: ctypes.Array[ctypes.c_float] | object, token: int, top: int
) -> TokenLogprob:
    """The log-probability of `token` under `logits` (a pointer to n_vocab floats), and the
    `top` most likely tokens (most likely first)."""
    values = np.ctypeslib.as_array(logits, shape=(model.n_vocab,)).astype(np.float64)
    finite = np.isfinite(values)
    peak = values[finite].max() if finite.any() else 0.0
    log_total = peak + np.log(np.exp(values[finite] - peak).sum())
    logprobs = values - log_total
    best: list[Candidate] = []
    if top > 0:
        count = min(top, model.n_vocab)
        ids = np.argpartition(-logprobs, count - 1)[:count]
        ids = ids[np.argsort(-logprobs[ids], kind="stable")]
        best = [_candidate(model, int(i), float(logprobs[i])) for i in ids]
    return TokenLogprob(_candidate(model, token, float(logprobs[token])), tuple(best))


def _candidate(model: LlamaModel, token: int, logprob: float) -> Candidate:
    piece = model.token_bytes(token, special=True)
    return Candidate(
        token,
        piece.decode("utf-8", errors="replace"),
        logprob if np.isfinite(logprob) else -9999.0,  # a banned token: JSON has no -inf
        tuple(piece),
    )
