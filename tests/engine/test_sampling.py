"""The sampler's own penalties give exactly what llama.cpp's penalties sampler gives."""

from __future__ import annotations

import ctypes
import random

import llama_cpp
import pytest

from hoshikage.engine.sampling import Penalties
from hoshikage.engine.types import SamplingParams

VOCAB = 500


def llama_cpp_penalised(
    logits: list[float], history: list[int], params: SamplingParams
) -> list[float]:
    """What llama.cpp's penalties sampler makes of the logits after seeing `history`."""
    sampler = llama_cpp.llama_sampler_init_penalties(
        VOCAB,
        params.repeat_last_n,
        params.repeat_penalty,
        params.frequency_penalty,
        params.presence_penalty,
    )
    try:
        for token in history:
            llama_cpp.llama_sampler_accept(sampler, token)
        data = (llama_cpp.llama_token_data * VOCAB)()
        for token, (entry, logit) in enumerate(zip(data, logits, strict=True)):
            entry.id, entry.logit, entry.p = token, logit, 0.0
        array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(data, llama_cpp.llama_token_data_p),
            size=VOCAB,
            selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return [data[token].logit for token in range(VOCAB)]
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(
    ("repeat", "frequency", "presence", "last_n"),
    [(1.1, 0.0, 0.0, 64), (1.5, 0.5, 0.3, 16), (1.0, 0.2, 0.0, 8), (0.8, -0.4, 1.2, 3)],
)
def test_penalties_match_llama_cpp(
    repeat: float, frequency: float, presence: float, last_n: int
) -> None:
    chooser = random.Random(last_n)
    params = SamplingParams(
        repeat_penalty=repeat,
        frequency_penalty=frequency,
        presence_penalty=presence,
        repeat_last_n=last_n,
    )
    # Repeats, and more tokens than the window: the oldest must stop counting.
    history = [chooser.randrange(30) for _ in range(3 * last_n + 5)]
    logits = [chooser.uniform(-8, 8) for _ in range(VOCAB)]
    penalties = Penalties(params, last_n)
    for token in history:
        penalties.accept(token)
    ours = (ctypes.c_float * VOCAB)(*logits)
    penalties.apply(ours)
    expected = llama_cpp_penalised(logits, history, params)
    assert list(ours) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert list(ours) != pytest.approx(logits)  # the penalties did something
