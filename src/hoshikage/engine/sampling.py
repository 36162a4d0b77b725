"""Sampler chains built from request parameters, in llama.cpp's own order.

Logit biases and repetition penalties are applied here, in place on the step's logits, to
the few tokens they concern. llama.cpp's own penalties sampler visits every token of the
vocabulary at every step (a hash lookup each): with a 152k-token vocabulary that is several
milliseconds per token per sequence, more than a tenth of a small model's decode time.

Grammars are consulted the same way: about the tokens the chain would pick, not about the
whole vocabulary (see GrammarGate).
"""

from __future__ import annotations

import collections
import ctypes
import math
import re
import secrets
import weakref
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from hoshikage.engine.model import LlamaModel
from hoshikage.engine.types import EngineError, SamplingParams

# The grammar-first chain llama.cpp's plain API gives (the grammar visits every token of the
# vocabulary at every step). Kept for the equivalence tests and benchmarks/grammar_sampling.py.
_GRAMMAR_FIRST = False

# llama_token_data as NumPy sees it, so candidate arrays are filled without a Python loop.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)

# How many of the best tokens a grammar is shown at a time once the chain's own choice was
# refused; the whole vocabulary comes last. Inside a JSON string most tokens are valid, after
# `{` a few hundred of 152k are: 64 usually settles it, rarely 16k.
_CHUNKS = (64, 1024, 16384)
# At most this many first bytes allowed, the grammar is also asked about second bytes.
_NARROW = 8
# Tokens refused one after another (only a trigger's text can be refused before its grammar
# starts) before the answer is ended instead.
_MAX_REFUSALS = 16

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


class Sampler:
    """One request's llama.cpp sampler chain: penalties, then top-k/top-p/min-p, temperature, draw.

    Each sequence gets its own chain, so its seed, penalties and history are its own.
    """

    def __init__(self, params: SamplingParams, model: LlamaModel, n_ctx: int) -> None:
        n_vocab = model.n_vocab
        # llama.cpp reads the seed as a uint32: any integer maps into that range.
        self.seed = params.seed % 2**32 if params.seed is not None else secrets.randbits(31)
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
        self._gate: GrammarGate | None = None
        grammar_first = params.grammar is not None and _GRAMMAR_FIRST
        first = _grammar_first_sampler(params, model) if grammar_first else None
        self._chain: Any = new_chain(params, self.seed, first)
        # Greedy with no grammar is the argmax of the logits: read in place with NumPy rather
        # than copied into llama.cpp's candidate array of the whole vocabulary first.
        self._n_vocab = n_vocab
        self._argmax = params.greedy and params.grammar is None
        if params.grammar is not None and not _GRAMMAR_FIRST:
            try:
                self._gate = GrammarGate(params, model, self._chain)
            except EngineError:
                self.close()
                raise

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
        if self._gate is not None:
            values = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
            token = self._gate.pick(values)
        elif self._argmax:
            # The first of equal maxima, as llama.cpp's greedy sampler takes.
            token = int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())
        else:
            token = int(llama_cpp.llama_sampler_sample(self._chain, context, logits_index))
        if self._penalties is not None:
            self._penalties.accept(token)
        return token

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def new_chain(params: SamplingParams, seed: int, first: Any = None) -> Any:
    """The chain for these parameters (after `first`, if given): greedy, or top-k, top-p,
    min-p, temperature and a draw seeded with `seed`."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    samplers = [] if first is None else [first]
    if params.greedy:
        samplers.append(llama_cpp.llama_sampler_init_greedy())
    else:
        if params.top_k > 0:
            samplers.append(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            samplers.append(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            samplers.append(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        samplers.append(llama_cpp.llama_sampler_init_temp(params.temperature))
        samplers.append(llama_cpp.llama_sampler_init_dist(seed))
    for sampler in samplers:
        llama_cpp.llama_sampler_chain_add(chain, sampler)  # the chain frees them
    return chain


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


def _parse_grammar(model: LlamaModel, grammar: str) -> Any:
    sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise EngineError("the grammar does not parse (GBNF with a 'root' rule expected)")
    return sampler


def _grammar_first_sampler(params: SamplingParams, model: LlamaModel) -> Any:
    """llama.cpp's own grammar sampler, lazy when there are triggers (the old path)."""
    assert params.grammar is not None
    if not params.grammar_triggers:
        return _parse_grammar(model, params.grammar)
    patterns = [pattern.encode("utf-8") for pattern in params.grammar_triggers]
    sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        model.vocab,
        params.grammar.encode("utf-8"),
        b"root",
        (ctypes.c_char_p * len(patterns))(*patterns),
        len(patterns),
        None,
        0,
    )
    if not sampler:
        raise EngineError("the grammar does not parse (GBNF with a 'root' rule expected)")
    return sampler


class Candidates:
    """Reusable llama_token_data arrays, for running llama.cpp samplers on chosen tokens."""

    def __init__(self) -> None:
        self._rows = np.zeros(0, dtype=_TOKEN_DATA)
        # Typed Any: ctypes fields take plain ints and pointers, which the stubs do not say.
        self._array: Any = llama_cpp.llama_token_data_array()
        self._one: Any = llama_cpp.llama_token_data()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False
        )

    def allows(self, grammar: llama_cpp.llama_sampler_p, token: int) -> bool:
        """Whether the grammar lets `token` come next: it sets a refused token's logit to -inf."""
        self._one.id, self._one.logit, self._one.p = token, 0.0, 0.0
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(self._one_array))
        return bool(self._one.logit != -math.inf)

    def allowed(self, grammar: llama_cpp.llama_sampler_p, ids: IntArray) -> npt.NDArray[np.bool_]:
        rows, _ = self.apply(grammar, ids, None)
        return np.asarray(rows["logit"] != -np.inf)

    def apply(
        self, sampler: llama_cpp.llama_sampler_p, ids: IntArray, logits: FloatArray | None
    ) -> tuple[npt.NDArray[np.void], int]:
        """Run `sampler` on these tokens: the rows it kept (it may sort and cut them) and the
        index of the row it selected (-1 if none)."""
        count = len(ids)
        if len(self._rows) < count:
            self._rows = np.zeros(count, dtype=_TOKEN_DATA)
        rows = self._rows[:count]
        rows["id"] = ids
        rows["logit"] = 0.0 if logits is None else logits
        rows["p"] = 0.0
        array = self._array
        array.data = self._rows.ctypes.data_as(llama_cpp.llama_token_data_p)
        array.size, array.selected, array.sorted = count, -1, False
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return self._rows[: array.size], int(array.selected)


class VocabIndex:
    """Each token's first two bytes as grammars see them, and a token spelling each byte.

    A grammar that refuses a token's first byte (or, after it, its second) refuses the
    token: asking it about 256 one-byte tokens, and about the second bytes after each of the
    few first bytes it allows, leaves a few hundred tokens to ask about instead of 152k.
    Built once per model (a pass over the vocabulary: half a second for 152k tokens).
    """

    def __init__(self, model: LlamaModel) -> None:
        n_vocab = model.n_vocab
        first = np.full(n_vocab, 256, dtype=np.int32)  # 256: no byte (an empty piece)
        second = np.full(n_vocab, 256, dtype=np.int32)
        self.byte_token = np.full(256, -1, dtype=np.int64)
        end = set(model.end_of_generation_tokens)
        buffer = ctypes.create_string_buffer(256)
        view = (ctypes.c_ubyte * 256).from_buffer(buffer)
        for token in range(n_vocab):
            # Special tokens written out: llama.cpp's grammars see them as their text.
            length = llama_cpp.llama_token_to_piece(model.vocab, token, buffer, 256, 0, True)
            if length < 0:  # longer than the buffer: nothing was written
                piece = model.token_bytes(token, special=True)
                first[token], second[token] = piece[0], piece[1]
            elif length > 1:
                first[token], second[token] = view[0], view[1]
            elif length == 1:
                first[token] = view[0]
                if token not in end and self.byte_token[view[0]] < 0:
                    self.byte_token[view[0]] = token
        self.pair = first * 257 + second
        self.starting = np.bincount(first, minlength=257)  # tokens per first byte
        self.spelled = np.flatnonzero(self.byte_token >= 0)  # bytes with a token of their own
        self.end = np.array(sorted(end), dtype=np.int64)

    def possible(self, grammar: Any, candidates: Candidates) -> IntArray | None:
        """Every token the grammar could allow next (a superset), in id order; None when
        that is most of the vocabulary (inside a string), not worth listing."""
        allowed = np.ones(257, dtype=bool)  # a byte without a token of its own is not ruled out
        allowed[256] = False  # empty pieces: grammars refuse them
        spelled = self.spelled
        allowed[spelled] = candidates.allowed(grammar, self.byte_token[spelled])
        table = np.zeros((257, 257), dtype=bool)
        table[allowed] = True
        narrow = spelled[allowed[spelled]]
        if len(narrow) > _NARROW and self.starting[allowed].sum() > len(self.pair) // 4:
            return None
        if len(narrow) <= _NARROW:
            for byte in narrow:
                clone = llama_cpp.llama_sampler_clone(grammar)
                llama_cpp.llama_sampler_accept(clone, int(self.byte_token[byte]))
                table[byte, spelled] = candidates.allowed(clone, self.byte_token[spelled])
                llama_cpp.llama_sampler_free(clone)
        possible = table.ravel()[self.pair]
        possible[self.end] = True  # end-of-generation: the grammar decides by its own rule
        return np.flatnonzero(possible)


_INDEXES: weakref.WeakKeyDictionary[LlamaModel, VocabIndex] = weakref.WeakKeyDictionary()


def vocab_index(model: LlamaModel) -> VocabIndex:
    index = _INDEXES.get(model)
    if index is None:
        index = _INDEXES[model] = VocabIndex(model)
    return index


class GrammarGate:
    """A grammar asked about the token the chain picks, not about the whole vocabulary.

    llama.cpp's grammar sampler first in the chain matches all 152k tokens of a Qwen
    vocabulary against the grammar at every step. Here, as llama.cpp's common_sampler does
    (grammar_first = false), the chain picks first (greedy: the argmax, read in place) and
    the grammar checks that one token. Only when it refuses is a search made: among the
    tokens whose first bytes the grammar allows (VocabIndex), the best 64, then 1,024, then
    16,384, then all are shown to the grammar until enough pass: one for greedy, top_k for
    sampling (a sampled step with top_k > 0 searches at once, so the chain draws once from
    exactly what top_k keeps of the grammar's tokens).

    The result is grammar-first's: the same token when greedy, the same distribution (and
    the same draws from the same seed, ties apart) when sampling with top_k. With top_k <= 0
    a draw from the whole vocabulary is checked and, if refused, drawn again from the
    grammar's tokens: exact without top-p/min-p, close with them (llama.cpp's way).

    When nothing at all may follow (the grammar is complete and end-of-generation is banned)
    the answer ends with an end-of-generation token: llama.cpp would abort the process.
    """

    def __init__(self, params: SamplingParams, model: LlamaModel, chain: Any) -> None:
        assert params.grammar is not None
        self._model, self._chain = model, chain
        self._n_vocab = model.n_vocab
        self._greedy = params.greedy
        self._top_k = params.top_k
        self._candidates = Candidates()
        self._index: VocabIndex | None = None  # built on the first refusal
        self._all = np.arange(self._n_vocab)
        self._grammar: Any = _parse_grammar(model, params.grammar)
        self._trigger = (
            LazyTrigger(params.grammar_triggers, model, self._candidates)
            if params.grammar_triggers
            else None
        )

    @property
    def active(self) -> bool:
        """Whether the grammar constrains the output yet (a lazy one: since its trigger)."""
        return self._trigger is None or self._trigger.fired

    def pick(self, logits: FloatArray) -> int:
        """The next token from these logits (biases and penalties applied); the grammar
        records it."""
        refused: list[int] = []
        token = self._first_choice(logits)
        for _ in range(_MAX_REFUSALS):
            if token is not None:
                if self._allows(token):
                    self._accept(token)
                    return token
                refused.append(token)
            token = self._search(logits, refused)
            if token is None:
                break
        return self._end_token()

    def _first_choice(self, logits: FloatArray) -> int | None:
        """The chain's own pick, ignoring the grammar; None where searching is cheaper."""
        if self._greedy:
            return int(logits.argmax())
        if self._top_k > 0:
            return None  # the first 64 candidates are checked as fast as one full draw
        return self._draw(self._all, logits)

    def _allows(self, token: int) -> bool:
        if self._trigger is not None and not self._trigger.fired:
            # Free text, except that a trigger's text must start the grammar well.
            is_end = self._model.is_end_of_generation(token)
            return is_end or self._trigger.allows(token, self._grammar)
        return self._candidates.allows(self._grammar, token)

    def _accept(self, token: int) -> None:
        if self._model.is_end_of_generation(token):
            return  # the answer ends; llama.cpp aborts on one its grammar did not finish
        if self._trigger is not None and not self._trigger.fired:
            self._trigger.accept(token, self._grammar)
        else:
            llama_cpp.llama_sampler_accept(self._grammar, token)

    def _valid(self, ids: IntArray) -> IntArray:
        """The tokens among `ids` the grammar allows (all while it waits for its trigger)."""
        return ids[self._candidates.allowed(self._grammar, ids)] if self.active else ids

    def _search(self, logits: FloatArray, refused: list[int]) -> int | None:
        """The grammar-first choice, found among the best of the tokens that could pass."""
        pool = None
        if self.active:
            if self._index is None:
                self._index = vocab_index(self._model)
            pool = self._index.possible(self._grammar, self._candidates)
        if pool is None:
            pool = self._all
        if refused:  # pool is in id order: find them by bisection (setdiff1d sorts, 50 ms)
            at = np.searchsorted(pool, refused)
            at = at[at < len(pool)]
            pool = np.delete(pool, at[np.isin(pool[at], refused)])
        values = logits if pool is self._all else logits[pool]
        n_pool = len(pool)
        need = 1 if self._greedy else (min(self._top_k, n_pool) if self._top_k > 0 else n_pool)
        found: list[IntArray] = []
        n_found = n_checked = 0
        threshold: float | None = None
        for size in _CHUNKS:
            if not need <= size < n_pool:
                continue
            threshold = float(np.partition(values, n_pool - size)[n_pool - size])
            # All at or above the size-th best logit (ties included), best first and, among
            # equals, lowest id first: the order llama.cpp's greedy sampler prefers.
            best = np.flatnonzero(values >= threshold)
            best = best[np.lexsort((best, -values[best]))]
            valid = self._valid(pool[best[n_checked:]])
            n_checked = len(best)
            found.append(valid)
            n_found += len(valid)
            if n_found >= need:
                break
        else:
            rest = pool if threshold is None else pool[values < threshold]
            valid = self._valid(rest)
            if self._greedy and len(valid):
                valid = valid[[int(logits[valid].argmax())]]  # first max, in id order
            found.append(valid)
        candidates = np.concatenate(found)
        if not len(candidates):
            return None
        if self._greedy:
            return int(candidates[0])
        return self._draw(candidates, logits)

    def _draw(self, ids: IntArray, logits: FloatArray) -> int | None:
        """The chain's pick among these tokens (llama_sampler_sample, on fewer tokens)."""
        rows, selected = self._candidates.apply(self._chain, ids, logits[ids])
        if selected < 0:
            return None
        token = int(rows[selected]["id"])
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _end_token(self) -> int:
        model = self._model
        if model.is_end_of_generation(model.eos_id):
            return model.eos_id
        if model.end_of_generation_tokens:
            return model.end_of_generation_tokens[0]
        raise EngineError("the grammar allows no further token and the model has no end token")

    def close(self) -> None:
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


class LazyTrigger:
    """Where a lazy grammar starts: free text until a trigger pattern matches the output.

    The semantics are llama.cpp's lazy grammar's (llama_grammar_accept_impl): after each
    token, every pattern in turn is matched against the UTF-8 bytes of the whole output so
    far, with a regular expression search anywhere in it (a pattern written `^…$` must match
    all of it). The first that matches starts the grammar: from the start of its first
    capturing group that matched something, else from the start of the match, the output
    is fed to the grammar, which goes on from there. So a plain marker such as `<tool_call>`
    works, with a grammar that begins with that marker: the marker (and whatever its token
    held after it) is the grammar's first text, and the text before it stays free.

    The matching is done here, with Python's `re` (for these patterns it agrees with the
    ECMAScript std::regex llama.cpp uses), feeding a plain grammar once a pattern matched,
    rather than by llama.cpp's lazy grammar: that one aborts the process when the text it
    replays does not fit the grammar, and its std::regex recurses once per byte of the output
    for patterns such as `[\\s\\S]*`, overflowing the stack (a segfault) after a few tens of
    kB. Here a token whose text would start the grammar badly is refused, another one picked.
    """

    def __init__(self, patterns: Sequence[str], model: LlamaModel, candidates: Candidates) -> None:
        self._patterns: list[tuple[re.Pattern[bytes], bool]] = []
        for pattern in patterns:
            try:
                compiled = re.compile(pattern.encode("utf-8"))
            except (re.error, UnicodeEncodeError) as exc:
                message = f"grammar trigger {pattern!r} is not a regular expression: {exc}"
                raise EngineError(message) from None
            anchored = pattern.startswith("^") and pattern.endswith("$")
            self._patterns.append((compiled, anchored))
        self._model, self._candidates = model, candidates
        self.fired = False
        self._text = bytearray()
        self._spans: list[tuple[int, int, int]] = []  # (token, start, end) in _text
        self._last: tuple[int, bytes, int | None] | None = None  # the last token matched

    def allows(self, token: int, grammar: Any) -> bool:
        """Whether `token` may come next: yes unless its text starts the grammar badly."""
        text, start = self._match(token)
        if start is None:
            return True
        clone = llama_cpp.llama_sampler_clone(grammar)
        try:
            return self._replay(clone, text, start, token)
        finally:
            llama_cpp.llama_sampler_free(clone)

    def accept(self, token: int, grammar: Any) -> None:
        """Record `token`; if it fires a trigger, feed the grammar the text from there."""
        text, start = self._match(token)
        self._last = None  # the output changes: what was matched against it is stale
        if start is None:
            self._spans.append((token, len(self._text), len(text)))
            self._text += text[len(self._text) :]
            return
        if not self._replay(grammar, text, start, token):
            raise EngineError("a grammar trigger's text does not fit the grammar")
        self.fired = True
        self._text, self._spans = bytearray(), []

    def _match(self, token: int) -> tuple[bytes, int | None]:
        """The output with `token` added, and where the grammar would start in it."""
        if self._last is not None and self._last[0] == token:
            return self._last[1], self._last[2]  # checked by allows() just before
        # Special tokens written out: llama.cpp's grammars see them as their text.
        text = bytes(self._text) + self._model.token_bytes(token, special=True)
        start = self._start(text)
        self._last = (token, text, start)
        return text, start

    def _start(self, text: bytes) -> int | None:
        for pattern, anchored in self._patterns:
            match = pattern.fullmatch(text) if anchored else None
            match = match or pattern.search(text)
            if match is not None:
                for group in range(1, pattern.groups + 1):
                    if match.end(group) > match.start(group) >= 0:
                        return match.start(group)
                return match.start()
        return None

    def _replay(self, grammar: Any, text: bytes, start: int, token: int) -> bool:
        """Feed text[start:] to the grammar, checking each piece: whole tokens where they lie
        after `start`, single bytes for the part of one cut by it. `token` ends the text."""
        spans = [*self._spans, (token, len(self._text), len(text))]
        for span_token, begin, end in spans:
            if end <= start:
                continue
            pieces = [span_token] if begin >= start else self._tokens_for(text[start:end])
            if pieces is None:
                return False
            for piece in pieces:
                if not self._candidates.allows(grammar, piece):
                    return False
                llama_cpp.llama_sampler_accept(grammar, piece)
        return True

    def _tokens_for(self, text: bytes) -> list[int] | None:
        """Single-byte tokens spelling `text` (None if the vocabulary lacks one)."""
        byte_token = vocab_index(self._model).byte_token
        tokens = [int(byte_token[byte]) for byte in text]
        return None if min(tokens, default=0) < 0 else tokens
