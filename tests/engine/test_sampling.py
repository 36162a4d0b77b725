"""The sampler's own penalties give exactly what llama.cpp's penalties sampler gives, and its
grammars (checked after the chain's pick) what llama.cpp's grammar-first chain gives."""

from __future__ import annotations

import ctypes
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt
import pytest

from hoshikage.engine.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from hoshikage.engine.model import LlamaModel
from hoshikage.engine.sampling import (
    Candidates,
    GrammarGate,
    Penalties,
    Sampler,
    _grammar_first_sampler,
    new_chain,
)
from hoshikage.engine.types import EngineError, SamplingParams

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


# --- grammars: checked after the chain's pick, with grammar-first's results ------------------

TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
}


def tool_call_grammar(marker: str) -> str:
    """A call to get_weather after `marker`: how a tool format's lazy grammar looks."""
    call = re.sub(r"^root ::=", "call ::=", json_schema_grammar(TOOL_SCHEMA), flags=re.M)
    return f'root ::= "{marker}" "\\n"? call\n{call}'


@pytest.fixture(scope="module")
def qwen(vocab_dir: Path) -> Iterator[LlamaModel]:
    """The real Qwen2 vocabulary (151,936 tokens) without weights: logits are made up."""
    model = LlamaModel(vocab_dir / "ggml-vocab-qwen2.gguf", vocab_only=True)
    yield model
    model.close()


class GrammarFirst:
    """The old path: llama.cpp's grammar sampler first in the chain, on the whole vocabulary."""

    def __init__(self, params: SamplingParams, model: LlamaModel) -> None:
        self._chain = new_chain(params, params.seed or 0, _grammar_first_sampler(params, model))
        self._candidates = Candidates()
        self._all = np.arange(model.n_vocab)

    def pick(self, logits: npt.NDArray[np.float32]) -> int:
        rows, selected = self._candidates.apply(self._chain, self._all, logits)
        token = int(rows[selected]["id"])
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self._chain)


def random_logits(model: LlamaModel, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    return (rng.standard_normal(model.n_vocab) * 3).astype(np.float32)


def compare_with_grammar_first(
    model: LlamaModel, params: SamplingParams, steps: int, forced: Sequence[int] = (), at: int = 3
) -> list[int]:
    """Both paths fed the same random logits (the `forced` tokens made certain from step
    `at`): the tokens they pick, which must agree."""
    rng = np.random.default_rng(0)
    chain = new_chain(params, params.seed or 0)
    gate = GrammarGate(params, model, chain)
    reference = GrammarFirst(params, model)
    picked: list[int] = []
    try:
        for step in range(steps):
            logits = random_logits(model, rng)
            if at <= step < at + len(forced):
                logits[forced[step - at]] = 50.0
            token = gate.pick(logits.copy())
            assert token == reference.pick(logits), f"step {step}: {picked}"
            picked.append(token)
            if model.is_end_of_generation(token):
                break
    finally:
        gate.close()
        llama_cpp.llama_sampler_free(chain)
        reference.close()
    return picked


# name: (grammar, triggers, the marker a lazy one is made to write)
GRAMMARS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "json object": (JSON_OBJECT_GBNF, (), ""),
    "json schema": (json_schema_grammar(TOOL_SCHEMA), (), ""),
    "lazy, special-token marker": (
        tool_call_grammar("<tool_call>"),
        ("<tool_call>",),
        "<tool_call>",
    ),
    "lazy, anchored with a group": (
        tool_call_grammar("<tool_call>"),
        (r"^[\s\S]*?(<tool_call>)[\s\S]*$",),
        "<tool_call>",
    ),
    "lazy, marker inside a token": (tool_call_grammar("TOOL:"), ("TOOL:",), "TOOL:"),
}


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_greedy_grammar_matches_grammar_first(qwen: LlamaModel, name: str) -> None:
    grammar, triggers, marker = GRAMMARS[name]
    params = SamplingParams(temperature=0.0, grammar=grammar, grammar_triggers=triggers)
    # The lazy ones are made to write their marker after some free text.
    forced = qwen.tokenize(f" Sure {marker}", add_special=False) if triggers else []
    picked = compare_with_grammar_first(qwen, params, steps=40, forced=forced)
    text = qwen.detokenize(picked)
    if triggers:  # free text, then the call
        assert text.index(marker) == len(qwen.detokenize(picked[:3])) + len(" Sure ")
        assert re.match(r'\s*\{ ?"name" ?: ?"get_weather"', text.split(marker, 1)[1])
    else:
        assert text.startswith("{")


def test_sampled_grammar_with_top_k_draws_what_grammar_first_draws(qwen: LlamaModel) -> None:
    # The chain draws once per step from the same top-k tokens: the same seed, the same draws.
    for grammar, triggers, marker in GRAMMARS.values():
        params = SamplingParams(
            temperature=0.9, top_k=40, seed=11, grammar=grammar, grammar_triggers=triggers
        )
        forced = qwen.tokenize(f" Sure {marker}", add_special=False) if triggers else []
        compare_with_grammar_first(qwen, params, steps=30, forced=forced)


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (0, 1.0), (40, 0.95)])
def test_sampling_returns_only_tokens_the_grammar_allows(
    qwen: LlamaModel, top_k: int, top_p: float
) -> None:
    # A strict grammar that never ends: digits among 152k random tokens are rarely drawn first.
    params = SamplingParams(
        temperature=1.0, top_k=top_k, top_p=top_p, min_p=0.0, seed=5, grammar=DIGITS
    )
    chain = new_chain(params, 5)
    gate = GrammarGate(params, qwen, chain)
    rng = np.random.default_rng(1)
    try:
        tokens = [gate.pick(random_logits(qwen, rng)) for _ in range(80)]
    finally:
        gate.close()
        llama_cpp.llama_sampler_free(chain)
    text = qwen.detokenize(tokens)
    assert re.fullmatch(r"[0-9]+(,[0-9]+)*,?", text), text
    assert len(set(tokens)) > 10  # drawn, not stuck on one token


DIGITS = 'root ::= [0-9]+ ("," [0-9]+)*'


def test_a_trigger_whose_text_does_not_fit_the_grammar_is_not_written(qwen: LlamaModel) -> None:
    # " TOOL" fires "TO", but the grammar wants "TOX": llama.cpp's lazy grammar would abort
    # the process replaying it. Here the token is refused and the next best one taken.
    grammar = 'root ::= "TOX" [0-9]'
    params = SamplingParams(temperature=0.0, grammar=grammar, grammar_triggers=("TO",))
    chain = new_chain(params, 0)
    gate = GrammarGate(params, qwen, chain)
    ((tool,), (hello,)) = (qwen.tokenize(text, add_special=False) for text in (" TOOL", " Hello"))
    (to,) = qwen.tokenize(" TO", add_special=False)
    logits = np.zeros(qwen.n_vocab, dtype=np.float32)
    logits[tool], logits[hello] = 50.0, 40.0
    try:
        assert gate.pick(logits) == hello
        assert not gate.active
        logits[to] = 60.0  # fires, and "TO" fits: the grammar starts, in the middle of " TO"
        assert gate.pick(logits) == to
        assert gate.active
        rest = [gate.pick(random_logits(qwen, np.random.default_rng(2))) for _ in range(2)]
    finally:
        gate.close()
        llama_cpp.llama_sampler_free(chain)
    assert re.fullmatch("X[0-9]", qwen.detokenize(rest))


def test_a_capturing_group_starts_the_grammar_where_it_matched(qwen: LlamaModel) -> None:
    # As in llama.cpp: the grammar gets the output from the first group that matched.
    params = SamplingParams(
        temperature=0.0, grammar='root ::= "[" [a-z]+ "]"', grammar_triggers=(r"call(\[)",)
    )
    chain = new_chain(params, 0)
    gate = GrammarGate(params, qwen, chain)
    rng = np.random.default_rng(3)
    rest: list[int] = []
    try:
        for token in qwen.tokenize("Now call[", add_special=False):
            logits = random_logits(qwen, rng)
            logits[token] = 50.0
            assert gate.pick(logits) == token
        assert gate.active
        while len(rest) < 8 and not (rest and qwen.is_end_of_generation(rest[-1])):
            rest.append(gate.pick(random_logits(qwen, rng)))
    finally:
        gate.close()
        llama_cpp.llama_sampler_free(chain)
    assert re.fullmatch(r"[a-z]+\]?", qwen.detokenize(rest)), qwen.detokenize(rest)


def test_a_finished_grammar_with_end_banned_ends_the_answer(qwen: LlamaModel) -> None:
    # Nothing may follow "ab" but end-of-generation, which ignore_eos bans: llama.cpp would
    # abort on the refused token it then picks; the gate ends the answer.
    params = SamplingParams(temperature=0.0, grammar='root ::= "ab"')
    chain = new_chain(params, 0)
    gate = GrammarGate(params, qwen, chain)
    rng = np.random.default_rng(4)
    banned = list(qwen.end_of_generation_tokens)
    tokens: list[int] = []
    try:
        while not tokens or not qwen.is_end_of_generation(tokens[-1]):
            logits = random_logits(qwen, rng)
            logits[banned] = -np.inf
            tokens.append(gate.pick(logits))
            assert len(tokens) < 5
    finally:
        gate.close()
        llama_cpp.llama_sampler_free(chain)
    assert qwen.detokenize(tokens[:-1]) == "ab"


def test_a_trigger_that_is_not_a_regular_expression_is_an_engine_error(qwen: LlamaModel) -> None:
    params = SamplingParams(grammar='root ::= "a"', grammar_triggers=("(unclosed",))
    with pytest.raises(EngineError, match="not a regular expression"):
        Sampler(params, qwen, 512)


def test_a_trigger_written_by_one_token_repeated_fires(qwen: LlamaModel) -> None:
    params = SamplingParams(
        temperature=0.0, grammar='root ::= "abab" [0-9]', grammar_triggers=("abab",)
    )
    chain = new_chain(params, 0)
    gate = GrammarGate(params, qwen, chain)
    (ab,) = qwen.tokenize("ab", add_special=False)
    logits = np.zeros(qwen.n_vocab, dtype=np.float32)
    logits[ab] = 50.0
    try:
        assert gate.pick(logits) == ab and not gate.active
        assert gate.pick(logits) == ab and gate.active  # the output is "abab" now
        assert qwen.detokenize([gate.pick(logits)]).isdigit()  # "ab" no longer fits
    finally:
        gate.close()
        llama_cpp.llama_sampler_free(chain)
