"""The engine thread: the only code that runs llama_decode. Requests in, token events out.

Continuous batching. The context has `n_slots` sequences (slots), each with its own KV cache
of n_ctx tokens. One dedicated thread runs a step loop: each step builds one llama_batch with
the next token of every generating slot plus chunks of the prompts still being read (chunked
prefill, so a long prompt never stalls the others), calls llama_decode once, and samples
every slot whose logits came out, each with its own sampler chain. Requests join free slots
and leave between steps; callers submit from any thread or event loop and never block.

Each slot remembers the tokens its KV holds. A request goes to the free slot with the
longest common prefix (a chat's next turn lands where its history already is) and only the
rest of its prompt is evaluated; otherwise to the least recently used free slot.

Embedding contexts pack inputs instead: up to EMBEDDING_SEQUENCES inputs (and
EMBEDDING_BATCH_TOKENS tokens, or one input of up to a window), each its own sequence with
positions from 0, share one llama_decode; the memory is cleared after it. Queued embedding
requests are served together, so small concurrent requests share decodes too.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from hoshikage.engine.generation import Generation
from hoshikage.engine.model import LlamaModel
from hoshikage.engine.sampling import Sampler
from hoshikage.engine.text_stream import StopMatcher, Utf8Assembler
from hoshikage.engine.types import (
    ContextOverflowError,
    EmbeddingResult,
    EngineError,
    EngineUnavailableError,
    ErrorEvent,
    FinishEvent,
    FinishReason,
    PreparedPrompt,
    SamplingParams,
    Timings,
    TokenEvent,
    Usage,
)

log = logging.getLogger(__name__)

KV_TYPES = {
    "f32": llama_cpp.GGML_TYPE_F32,
    "f16": llama_cpp.GGML_TYPE_F16,
    "bf16": 30,  # GGML_TYPE_BF16, which the bindings do not name
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "q4_1": llama_cpp.GGML_TYPE_Q4_1,
    "q5_0": llama_cpp.GGML_TYPE_Q5_0,
    "q5_1": llama_cpp.GGML_TYPE_Q5_1,
    "iq4_nl": llama_cpp.GGML_TYPE_IQ4_NL,
}
FLASH_ATTENTION = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
# A slot is reused for a prompt that keeps at least this share of its cached tokens.
SLOT_SIMILARITY = 0.5
# Inputs one embedding decode may hold: the per-decode overhead that dominates short inputs
# is spread thin by 16 (64 was 2% faster with MiniLM on CPU, within the noise).
EMBEDDING_SEQUENCES = 16
# Tokens packed into one embedding decode (a single input may be longer, up to the window).
# Every token of a decode attends to all of the decode's tokens, masked or not, so the cost of
# packing grows with its square: on CPU, 256-512 tokens was fastest for short and mixed
# inputs, 2048 25-70% slower for medium and mixed lengths (MiniLM, stories260K).
EMBEDDING_BATCH_TOKENS = 512


@dataclass(frozen=True)
class ContextConfig:
    n_ctx: int
    n_batch: int
    n_threads: int
    flash_attn: str = "auto"
    kv_cache_type: str = "f16"
    embedding: bool = False  # pooled embeddings instead of generation
    n_slots: int = 1  # sequences decoded together (llama-server's --parallel)


@dataclass
class _Job:
    prompt: PreparedPrompt
    params: SamplingParams
    handle: Generation
    submitted_at: float


@dataclass
class _EmbedJob:
    inputs: list[list[int]]
    result: Future[EmbeddingResult]
    vectors: list[list[float]] = field(default_factory=list)  # filled in input order


def common_prefix_length(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


@dataclass
class _Slot:
    """One sequence of the context, and the request it is serving, if any."""

    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    last_used: float = 0.0
    job: _Job | None = None
    sampler: Sampler | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    reused: int = 0
    started: float = 0.0
    prefilled: float = 0.0
    first_token_at: float | None = None
    generated: int = 0
    limit: int = 0
    next_token: int | None = None  # sampled, shown, to be evaluated in the next step
    logits_index: int = -1  # where this slot's logits are in the step's batch
    in_batch: list[int] = field(default_factory=list)  # tokens this step adds for this slot
    assembler: Utf8Assembler = field(default_factory=Utf8Assembler)
    stops: StopMatcher = field(default_factory=lambda: StopMatcher(()))


class Scheduler:
    def __init__(self, model: LlamaModel, config: ContextConfig) -> None:
        if config.kv_cache_type not in KV_TYPES:
            raise EngineError(
                f"unknown KV cache type {config.kv_cache_type!r}; one of {', '.join(KV_TYPES)}"
            )
        if config.flash_attn not in FLASH_ATTENTION:
            raise EngineError(
                f"unknown flash_attn value {config.flash_attn!r}; one of auto, on, off"
            )
        if config.kv_cache_type not in ("f16", "f32", "bf16") and config.flash_attn == "off":
            raise EngineError(
                f"a quantised KV cache ({config.kv_cache_type}) needs flash attention: "
                f"set flash_attn to 'auto' or 'on', or kv_cache_type to 'f16'"
            )
        if config.n_slots < 1:
            raise EngineError("parallel must be at least 1")
        n_slots = 1 if config.embedding else config.n_slots
        self._model = model
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.n_ctx * n_slots  # every slot gets the full window
        params.n_batch = config.n_batch
        params.n_ubatch = config.n_batch
        params.n_seq_max = n_slots
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        params.flash_attn_type = FLASH_ATTENTION[config.flash_attn]
        params.type_k = KV_TYPES[config.kv_cache_type]
        params.type_v = KV_TYPES[config.kv_cache_type]
        params.no_perf = True
        if config.embedding:
            params.embeddings = True
            params.n_seq_max = EMBEDDING_SEQUENCES
            # A decode is one micro-batch: encoders need every input whole in one, and
            # llama.cpp pools a sequence over the micro-batch it is in. It holds a full window.
            params.n_ctx = params.n_batch = params.n_ubatch = max(
                config.n_ctx, EMBEDDING_BATCH_TOKENS
            )
            # One KV stream for all sequences (models with a KV cache): a decode's tokens fit
            # in it together and it is cleared after each decode, so every input can still
            # use a whole window. Separate streams would cost a window each and split a
            # mixed-length batch into several micro-batches.
            params.kv_unified = True
        context = llama_cpp.llama_init_from_model(model.pointer, params)
        if not context:
            raise EngineError(
                f"llama.cpp could not create a context of {n_slots} x {config.n_ctx} tokens: "
                f"out of memory (try a smaller n_ctx or parallel), or a KV cache type this "
                f"model cannot use (quantised types need a head size that is a multiple of "
                f"32; try kv_cache_type f16)"
            )
        self._context = context
        self._memory = llama_cpp.llama_get_memory(context)
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(context))  # one slot's window
        # llama.cpp may round n_ctx up and caps n_batch at the n_ctx asked for: use its values.
        self.n_batch = int(llama_cpp.llama_n_batch(context))
        self.embedding = config.embedding
        self.embedding_decodes = 0  # llama_decode calls that embedded inputs (for status)
        self._pooled = False  # llama.cpp pools each sequence (else: mean of token vectors)
        if config.embedding:
            self.n_batch = min(self.n_batch, int(llama_cpp.llama_n_ubatch(context)))
            self.n_ctx = min(config.n_ctx, self.n_ctx)  # the longest input: the model's window
            pooling = int(llama_cpp.llama_pooling_type(context))
            if pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK or self.n_batch < self.n_ctx:
                llama_cpp.llama_free(context)
                raise EngineError(
                    "this model is a reranker: it scores pairs, it does not embed"
                    if pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK
                    else f"llama.cpp gave an embedding batch of {self.n_batch} tokens, "
                    f"shorter than the {self.n_ctx}-token window"
                )
            self._pooled = pooling != llama_cpp.LLAMA_POOLING_TYPE_NONE
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._slots = [_Slot(seq=index) for index in range(n_slots)]
        self._n_embd = int(llama_cpp.llama_model_n_embd_out(model.pointer))
        self._jobs: collections.deque[_Job | _EmbedJob] = collections.deque()
        self._wakeup = threading.Condition()
        self._closing = False  # no new requests; the thread ends
        self._closed = False  # close() was called
        self.failure: str | None = None  # why the engine thread stopped, if it did
        self._thread = threading.Thread(target=self._run, name="hoshikage-engine", daemon=True)
        self._thread.start()

    # --- caller side ---------------------------------------------------------------------
    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> Generation:
        handle = Generation()
        with self._wakeup:
            if self._closing:
                raise EngineUnavailableError(self.failure or "the engine is shut down")
            self._jobs.append(_Job(prompt, params, handle, time.perf_counter()))
            self._wakeup.notify()
        return handle

    def submit_embedding(self, inputs: list[list[int]]) -> Future[EmbeddingResult]:
        """Embed token lists on the engine thread; the future holds the vectors."""
        result: Future[EmbeddingResult] = Future()
        with self._wakeup:
            if self._closing:
                raise EngineUnavailableError(self.failure or "the engine is shut down")
            self._jobs.append(_EmbedJob(inputs, result))
            self._wakeup.notify()
        return result

    @property
    def alive(self) -> bool:
        """False once the engine thread has stopped for any reason but close()."""
        return self.failure is None and (self._thread.is_alive() or self._closed)

    @property
    def n_slots(self) -> int:
        return len(self._slots)

    @property
    def cached_tokens(self) -> int:
        """Tokens held in the KV cache, over all slots."""
        return sum(len(slot.cached) for slot in self._slots)

    def slot_usage(self) -> list[tuple[int, bool]]:
        """(tokens cached, busy) for each slot, for status displays."""
        return [(len(slot.cached), slot.job is not None) for slot in self._slots]

    @property
    def queue_depth(self) -> int:
        return len(self._jobs)

    @property
    def busy(self) -> bool:
        return any(slot.job is not None for slot in self._slots)

    def close(self) -> None:
        """Stop the thread (ending every request as cancelled) and free the context."""
        with self._wakeup:
            if self._closed:
                return
            self._closed = self._closing = True
            self._wakeup.notify_all()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._context)

    # --- engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # the thread is ending: tell everyone who waits
            self.failure = f"the engine thread stopped: {type(exc).__name__}: {exc}"
            log.critical("%s", self.failure, exc_info=exc)
            self._abandon_everything(self.failure)

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not self._jobs and not self.busy and not self._closing:
                    self._wakeup.wait()
                if self._closing:
                    self._cancel_everything()
                    return
                embeddings = self._admit()
            if embeddings:
                try:
                    self._serve_embeddings(embeddings)
                except Exception as exc:  # a bug here must not leave callers waiting
                    log.error("embedding failed: %s", exc)
                    for job in embeddings:
                        if not job.result.done():
                            job.result.set_exception(exc)
            elif self.busy:
                try:
                    self._step()
                except Exception as exc:  # never let one bad step take the thread down
                    log.error("generation failed: %s", exc)
                    log.debug("generation failure details", exc_info=True)
                    self._fail_all(f"generation failed: {exc}")

    def _admit(self) -> list[_EmbedJob]:
        """Move queued jobs into free slots, in arrival order (called under the lock).

        Returns the embedding jobs at the head of the queue, to be served together.
        """
        embeddings: list[_EmbedJob] = []
        while self._jobs:
            job = self._jobs[0]
            if isinstance(job, _EmbedJob):
                if self.busy:
                    break  # embeddings run alone (embedding engines never generate)
                embeddings.append(job)
                self._jobs.popleft()
                continue
            if embeddings:
                break
            free = [slot for slot in self._slots if slot.job is None]
            if not free:
                break
            self._jobs.popleft()
            try:
                self._start(job, free)
            except Exception as exc:  # this request cannot start; the others go on
                log.error("a request could not start: %s", exc, exc_info=exc)
                self._refuse(job, f"the request could not start: {exc}")
        return embeddings

    def _refuse(self, job: _Job, message: str) -> None:
        """End a job that failed while being admitted, freeing the slot it may hold."""
        for slot in self._slots:
            if slot.job is job:
                self._release(slot)
                slot.cached.clear()  # its KV may be half-written
        job.handle.push(ErrorEvent(message))

    def _start(self, job: _Job, free: list[_Slot]) -> None:
        tokens = job.prompt.tokens
        started = time.perf_counter()
        if not tokens:
            job.handle.push(ErrorEvent("the prompt is empty"))
            return
        slot = self._choose_slot(free, tokens)
        keep = common_prefix_length(slot.cached, tokens)
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be evaluated again to get its logits
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1):
            keep = 0  # this model's memory cannot drop a tail (recurrent): start over
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        del slot.cached[keep:]
        try:
            sampler = Sampler(job.params, self._model, self.n_ctx)
        except EngineError as exc:
            job.handle.push(ErrorEvent(str(exc)))
            return
        sampler.remember(tokens)
        slot.job, slot.sampler = job, sampler
        slot.pending = tokens[keep:]
        slot.reused = keep
        slot.started = started
        slot.prefilled = 0.0
        slot.first_token_at = None
        slot.generated = 0
        slot.limit = min(job.prompt.max_new_tokens, self.n_ctx - len(tokens))
        slot.next_token = None
        slot.assembler = Utf8Assembler()
        slot.stops = StopMatcher(job.params.stop)

    @staticmethod
    def _choose_slot(free: list[_Slot], tokens: list[int]) -> _Slot:
        """The free slot holding most of this prompt's start, if it keeps most of its cache.

        A slot whose cache shares only a template's opening with the prompt belongs to another
        conversation: taking it would throw that conversation's history away for a few
        tokens. As llama-server does (slot prompt similarity 0.5), such slots are passed over
        for an empty one, else the least recently used.
        """
        matches = [(common_prefix_length(slot.cached, tokens), slot) for slot in free]
        worthy = [
            (n, slot)
            for n, slot in matches
            if slot.cached and n >= SLOT_SIMILARITY * len(slot.cached)
        ]
        if worthy:
            return max(worthy, key=lambda pair: (pair[0], -pair[1].last_used))[1]
        empty = [slot for slot in free if not slot.cached]
        if empty:
            return empty[0]
        return min(free, key=lambda slot: slot.last_used)

    def _step(self) -> None:
        """One llama_decode for every active slot: a token each, then prompt chunks."""
        batch, count = self._batch, 0
        for slot in self._slots:
            slot.logits_index, slot.in_batch = -1, []
            if slot.job is not None and (slot.job.handle.cancel_requested or self._closing):
                self._finish(slot, "cancelled")
        for slot in self._slots:  # generating slots first: their latency matters most
            if slot.job is not None and slot.next_token is not None and count < self.n_batch:
                self._add(slot, [slot.next_token], count, logits_for_last=True)
                slot.next_token = None
                count += 1
        for slot in self._slots:
            if slot.job is not None and slot.pending and count < self.n_batch:
                chunk = slot.pending[: self.n_batch - count]
                del slot.pending[: len(chunk)]
                self._add(slot, chunk, count, logits_for_last=not slot.pending)
                count += len(chunk)
        if count == 0:
            return
        batch.n_tokens = count
        status = llama_cpp.llama_decode(self._context, batch)
        if status != 0:
            raise EngineError(
                f"llama_decode failed with status {status}"
                + (" (no room left in the KV cache)" if status == 1 else "")
            )
        now = time.perf_counter()
        for slot in self._slots:
            slot.cached.extend(slot.in_batch)
            if slot.job is not None and slot.in_batch:
                slot.last_used = now
                if not slot.pending and not slot.prefilled:
                    slot.prefilled = now
            if slot.job is not None and slot.logits_index >= 0:
                self._sample(slot)

    def _add(self, slot: _Slot, tokens: list[int], start: int, *, logits_for_last: bool) -> None:
        batch, position = self._batch, len(slot.cached)
        for offset, token in enumerate(tokens):
            index = start + offset
            batch.token[index] = token
            batch.pos[index] = position + offset
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = slot.seq
            batch.logits[index] = False
        if logits_for_last:
            batch.logits[start + len(tokens) - 1] = True
            slot.logits_index = start + len(tokens) - 1
        slot.in_batch = list(tokens)

    def _sample(self, slot: _Slot) -> None:
        assert slot.job is not None and slot.sampler is not None
        if slot.generated >= slot.limit:
            self._finish(slot, "length")
            return
        token = slot.sampler.sample(self._context, slot.logits_index)
        if slot.first_token_at is None:
            slot.first_token_at = time.perf_counter()
        if self._model.is_end_of_generation(token):
            self._finish(slot, "stop")
            return
        slot.generated += 1
        text = slot.stops.feed(slot.assembler.feed(self._model.token_bytes(token)))
        if text:
            slot.job.handle.push(TokenEvent(text))
        if slot.stops.stopped:
            self._finish(slot, "stop")
        elif slot.generated >= slot.limit:
            self._finish(slot, "length")  # no need to evaluate a token nobody will extend
        else:
            slot.next_token = token

    def _finish(self, slot: _Slot, reason: FinishReason) -> None:
        job = slot.job
        assert job is not None
        tail = slot.stops.feed(slot.assembler.flush()) + slot.stops.flush()
        if tail and reason != "cancelled":
            job.handle.push(TokenEvent(tail))
        ended = time.perf_counter()
        first = slot.first_token_at or ended
        prefilled = slot.prefilled or ended
        n_prompt = len(job.prompt.tokens)
        event = FinishEvent(
            finish_reason=reason,
            usage=Usage(
                prompt_tokens=n_prompt,
                completion_tokens=slot.generated,
                cached_prompt_tokens=slot.reused,
            ),
            timings=Timings(
                queued_s=slot.started - job.submitted_at,
                time_to_first_token_s=first - job.submitted_at,
                prompt_eval_s=prefilled - slot.started,
                decode_s=ended - first if slot.generated > 1 else 0.0,
                total_s=ended - job.submitted_at,
                prompt_tokens_evaluated=n_prompt - slot.reused,
                decode_tokens=max(slot.generated - 1, 0),
            ),
            dropped_messages=job.prompt.dropped_messages,
        )
        # Free the slot before telling the caller, so a finished request is never "busy".
        self._release(slot)
        job.handle.push(event)

    def _release(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.sampler, slot.next_token = None, None, None
        slot.pending = []  # the KV of what was evaluated stays, for prefix reuse
        with self._wakeup:
            self._wakeup.notify()  # a queued job may take this slot

    def _cancel_everything(self) -> None:
        for slot in self._slots:
            if slot.job is not None:
                self._finish(slot, "cancelled")
        now = time.perf_counter()
        for job in self._jobs:
            if isinstance(job, _EmbedJob):
                job.result.cancel()
                continue
            job.handle.cancel()  # never started: cancelled, with nothing evaluated
            waited = now - job.submitted_at
            job.handle.push(
                FinishEvent(
                    finish_reason="cancelled",
                    usage=Usage(prompt_tokens=len(job.prompt.tokens), completion_tokens=0),
                    timings=Timings(waited, waited, 0.0, 0.0, waited, 0, 0),
                    dropped_messages=job.prompt.dropped_messages,
                )
            )
        self._jobs.clear()

    def _fail_all(self, message: str) -> None:
        for slot in self._slots:
            if slot.job is not None:
                slot.job.handle.push(ErrorEvent(message))
                self._release(slot)
        self._forget_cache()

    def _abandon_everything(self, message: str) -> None:
        """End every running and queued request with a 503-kind error (the thread is dying)."""
        with self._wakeup:
            self._closing = True  # submit() now refuses
            jobs = list(self._jobs)
            self._jobs.clear()
        for slot in self._slots:
            if slot.job is not None:
                slot.job.handle.push(ErrorEvent(message, unavailable=True))
                slot.job = None
        for job in jobs:
            if isinstance(job, _EmbedJob):
                if not job.result.done():
                    job.result.set_exception(EngineUnavailableError(message))
            else:
                job.handle.push(ErrorEvent(message, unavailable=True))

    def _serve_embeddings(self, jobs: list[_EmbedJob]) -> None:
        """Embed every input of these jobs, as many inputs per decode as fit, in order."""
        queue: collections.deque[tuple[_EmbedJob, list[int]]] = collections.deque()
        for job in jobs:
            if not job.result.set_running_or_notify_cancel():
                continue
            problem = self._embedding_input_error(job.inputs)
            if problem is not None:
                job.result.set_exception(problem)
            elif not job.inputs:
                job.result.set_result(EmbeddingResult([], 0))
            else:
                queue.extend((job, tokens) for tokens in job.inputs)
        budget = min(EMBEDDING_BATCH_TOKENS, self.n_batch)
        while queue:
            group: list[tuple[_EmbedJob, list[int]]] = []
            n_tokens = 0
            while queue and len(group) < EMBEDDING_SEQUENCES:
                job, tokens = queue[0]
                if job.result.done():  # failed in an earlier decode: drop its other inputs
                    queue.popleft()
                elif not group or n_tokens + len(tokens) <= budget:
                    group.append(queue.popleft())
                    n_tokens += len(tokens)
                else:
                    break
            if not group:
                continue
            try:
                vectors = self._embed_group([tokens for _, tokens in group])
            except Exception as exc:  # fail these requests; the thread keeps serving
                log.error("embedding failed: %s", exc)
                for job, _ in group:
                    if not job.result.done():
                        job.result.set_exception(exc)
                continue
            for (job, _), vector in zip(group, vectors.tolist(), strict=True):
                job.vectors.append(vector)
                if len(job.vectors) == len(job.inputs):
                    n_prompt = sum(len(tokens) for tokens in job.inputs)
                    job.result.set_result(EmbeddingResult(job.vectors, n_prompt))

    def _embedding_input_error(self, inputs: list[list[int]]) -> EngineError | None:
        for tokens in inputs:
            if not tokens:
                return EngineError("cannot embed an empty input")
            if len(tokens) > self.n_ctx:
                return ContextOverflowError(
                    f"an input of {len(tokens)} tokens is longer than the model's "
                    f"{self.n_ctx}-token window",
                    n_prompt_tokens=len(tokens),
                    n_ctx=self.n_ctx,
                )
        return None

    def _embed_group(self, inputs: list[list[int]]) -> npt.NDArray[np.float32]:
        """One decode for these inputs, each its own sequence: their L2-normalised vectors."""
        batch, index = self._batch, 0
        for seq, tokens in enumerate(inputs):
            for position, token in enumerate(tokens):
                batch.token[index] = token
                batch.pos[index] = position
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = seq
                batch.logits[index] = True  # pooling reads every token's output
                index += 1
        batch.n_tokens = index
        try:
            self.embedding_decodes += 1
            status = llama_cpp.llama_decode(self._context, batch)
            if status != 0:
                raise EngineError(f"llama_decode failed with status {status} while embedding")
            vectors = np.empty((len(inputs), self._n_embd), dtype=np.float32)
            first = 0  # batch index of this input's first token
            for seq, tokens in enumerate(inputs):
                if self._pooled:
                    vectors[seq] = self._embedding_row(
                        llama_cpp.llama_get_embeddings_seq(self._context, seq)
                    )
                else:  # no pooling in this model: average the token vectors
                    rows = range(first, first + len(tokens))
                    vectors[seq] = np.mean(
                        [
                            self._embedding_row(
                                llama_cpp.llama_get_embeddings_ith(self._context, row)
                            )
                            for row in rows
                        ],
                        axis=0,
                    )
                first += len(tokens)
        finally:
            self._forget_cache()  # the next decode's sequences start from position 0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0  # an all-zero vector stays zero rather than NaN
        normalised: npt.NDArray[np.float32] = vectors / norms
        return normalised

    def _embedding_row(self, pointer: Any) -> npt.NDArray[np.float32]:
        """A view of n_embd floats llama.cpp returned (NULL: an error, not a crash)."""
        if not pointer:
            raise EngineError("llama.cpp returned no embedding")
        row: npt.NDArray[np.float32] = np.ctypeslib.as_array(pointer, shape=(self._n_embd,))
        return row

    def _forget_cache(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, True)
        for slot in self._slots:
            slot.cached.clear()
