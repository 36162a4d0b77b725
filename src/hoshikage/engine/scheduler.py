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

Several choices of one prompt (OpenAI's `n`) are a group: they start together in n free
slots, the prompt is read once in one of them, and when its last token's logits are out its
KV is copied into the others' sequences; each choice draws its first token from those same
logits with its own sampler, and from then on they are independent slots.

Embedding contexts pack inputs instead (see engine.embedding_batch).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import llama_cpp
import numpy as np

from hoshikage.engine.context import ContextConfig, copy_sequence, create_context
from hoshikage.engine.embedding_batch import (
    EMBEDDING_BATCH_TOKENS,
    EMBEDDING_SEQUENCES,
    EmbeddingBatcher,
    EmbedJob,
)
from hoshikage.engine.generation import Generation
from hoshikage.engine.logprobs import token_logprob
from hoshikage.engine.model import LlamaModel
from hoshikage.engine.sampling import Sampler
from hoshikage.engine.text_stream import StopMatcher, Utf8Assembler
from hoshikage.engine.types import (
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
    TokenLogprob,
    Usage,
)

log = logging.getLogger(__name__)

# A slot is reused for a prompt that keeps at least this share of its cached tokens.
SLOT_SIMILARITY = 0.5
__all__ = ["EMBEDDING_BATCH_TOKENS", "EMBEDDING_SEQUENCES", "ContextConfig", "Scheduler"]


@dataclass
class _Job:
    prompt: PreparedPrompt
    params: SamplingParams
    handle: Generation
    submitted_at: float


@dataclass
class _Group:
    """The n choices of one prompt, queued as one request: they need n free slots at once."""

    jobs: list[_Job]


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
    # A group's choices wait in their slots while one slot (their source) reads the prompt.
    source: _Slot | None = None
    followers: list[_Slot] = field(default_factory=list)
    # Logprobs of tokens sampled but not yet sent (their text is held back), when asked for.
    logprobs: list[TokenLogprob] = field(default_factory=list)


class Scheduler:
    def __init__(self, model: LlamaModel, config: ContextConfig) -> None:
        self._shape = created = create_context(model, config)
        self._model = model
        self._context = context = created.pointer
        self._memory = llama_cpp.llama_get_memory(context)
        self.n_ctx, self.n_batch = created.n_ctx, created.n_batch
        self.embedding = config.embedding
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._slots = [_Slot(seq=index) for index in range(created.n_slots)]
        self._embedder = EmbeddingBatcher(
            context,
            self._batch,
            n_batch=self.n_batch,
            n_ctx=self.n_ctx,
            n_embd=int(llama_cpp.llama_model_n_embd_out(model.pointer)),
            pooled=created.pooled,
        )
        self._jobs: collections.deque[_Job | _Group | EmbedJob] = collections.deque()
        self._wakeup = threading.Condition()
        self._closing = False  # no new requests; the thread ends
        self._closed = False  # close() was called
        self.failure: str | None = None  # why the engine thread stopped, if it did
        self._thread = threading.Thread(target=self._run, name="hoshikage-engine", daemon=True)
        self._thread.start()

    # --- caller side ---------------------------------------------------------------------
    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> Generation:
        return self.submit_choices(prompt, params, 1)[0]

    def submit_choices(
        self, prompt: PreparedPrompt, params: SamplingParams, n: int
    ) -> list[Generation]:
        """n generations of one prompt, which is evaluated once; each has its own sampler
        (seeded params.seed + i when a seed is given) and its own handle to cancel.

        The group starts when n slots are free at once. Admission stays in arrival order: a
        group at the head of the queue keeps the slots that free up until it has n, and
        later requests wait behind it as they would behind any earlier request. So it
        cannot starve, and it holds the others back only until requests already running
        end (each is bounded by its max_tokens and its window).
        """
        if n < 1:
            raise EngineError(f"n must be at least 1, not {n}")
        if n > self.n_slots:
            raise EngineError(
                f"n={n} needs {n} slots; this model has {self.n_slots} (the parallel setting)"
            )
        submitted = time.perf_counter()
        jobs = [
            _Job(
                prompt,
                params if params.seed is None else replace(params, seed=params.seed + index),
                Generation(),
                submitted,
            )
            for index in range(n)
        ]
        with self._wakeup:
            if self._closing:
                raise EngineUnavailableError(self.failure or "the engine is shut down")
            self._jobs.append(jobs[0] if n == 1 else _Group(jobs))
            self._wakeup.notify()
        return [job.handle for job in jobs]

    def submit_embedding(self, inputs: list[list[int]]) -> Future[EmbeddingResult]:
        """Embed token lists on the engine thread; the future holds the vectors."""
        result: Future[EmbeddingResult] = Future()
        with self._wakeup:
            if self._closing:
                raise EngineUnavailableError(self.failure or "the engine is shut down")
            self._jobs.append(EmbedJob(inputs, result))
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
    def embedding_decodes(self) -> int:
        """llama_decode calls that embedded inputs (for status)."""
        return self._embedder.decodes

    @property
    def cached_tokens(self) -> int:
        """Tokens held in the KV cache, over all slots."""
        return sum(len(slot.cached) for slot in self._slots)

    def slot_usage(self) -> list[tuple[int, bool]]:
        """(tokens cached, busy) for each slot, for status displays."""
        return [(len(slot.cached), slot.job is not None) for slot in self._slots]

    @property
    def queue_depth(self) -> int:
        """Requests waiting (a group of choices is one request)."""
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
                    self._embedder.serve(embeddings)
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

    def _admit(self) -> list[EmbedJob]:
        """Move queued jobs into free slots, in arrival order (called under the lock).

        Returns the embedding jobs at the head of the queue, to be served together.
        """
        embeddings: list[EmbedJob] = []
        while self._jobs:
            job = self._jobs[0]
            if isinstance(job, EmbedJob):
                if self.busy:
                    break  # embeddings run alone (embedding engines never generate)
                embeddings.append(job)
                self._jobs.popleft()
                continue
            if embeddings:
                break
            group = job.jobs if isinstance(job, _Group) else [job]
            free = [slot for slot in self._slots if slot.job is None]
            if len(free) < len(group):
                break  # in arrival order: a group keeps the slots that free up (see submit)
            self._jobs.popleft()
            try:
                self._start(group, free)
            except Exception as exc:  # this request cannot start; the others go on
                log.error("a request could not start: %s", exc, exc_info=exc)
                for each in group:
                    self._refuse(each, f"the request could not start: {exc}")
        return embeddings

    def _refuse(self, job: _Job, message: str) -> None:
        """End a job that failed while being admitted, freeing the slot it may hold."""
        for slot in self._slots:
            if slot.job is job:
                self._release(slot)
                slot.cached.clear()  # its KV may be half-written
        job.handle.push(ErrorEvent(message))

    def _start(self, group: list[_Job], free: list[_Slot]) -> None:
        """Put a request (or a group's choices, one prompt) into free slots.

        A group's first choice reads the prompt in the slot that suits it; the others wait in
        the slots least worth keeping (empty, else least recently used) for its KV copy.
        """
        first = group[0]
        tokens = first.prompt.tokens
        started = time.perf_counter()
        samplers: list[Sampler] = []
        try:
            if not tokens:
                raise EngineError("the prompt is empty")
            for job in group:
                samplers.append(Sampler(job.params, self._model, self.n_ctx))
        except EngineError as exc:  # the same prompt and parameters: the same for every choice
            for sampler in samplers:
                sampler.close()
            for job in group:
                job.handle.push(ErrorEvent(str(exc)))
            return
        slot = self._choose_slot(free, tokens)
        keep = common_prefix_length(slot.cached, tokens)
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be evaluated again to get its logits
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1):
            keep = 0  # this model's memory cannot drop a tail (recurrent): start over
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        del slot.cached[keep:]
        self._assign(slot, first, samplers[0], started, pending=tokens[keep:], reused=keep)
        others = sorted(
            (other for other in free if other is not slot),
            key=lambda other: (bool(other.cached), other.last_used),
        )
        for follower, job, sampler in zip(others, group[1:], samplers[1:], strict=False):
            # Its own KV stays until the copy, for reuse if this choice is cancelled first.
            self._assign(follower, job, sampler, started, pending=[], reused=len(tokens))
            follower.source = slot
            slot.followers.append(follower)

    def _assign(
        self,
        slot: _Slot,
        job: _Job,
        sampler: Sampler,
        started: float,
        *,
        pending: list[int],
        reused: int,
    ) -> None:
        sampler.remember(job.prompt.tokens)
        slot.job, slot.sampler = job, sampler
        slot.pending = pending
        slot.reused = reused
        slot.started = started
        slot.prefilled = 0.0
        slot.first_token_at = None
        slot.generated = 0
        slot.limit = min(job.prompt.max_new_tokens, self.n_ctx - len(job.prompt.tokens))
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
        for slot in self._slots:
            while slot.job is not None and (slot.job.handle.cancel_requested or self._closing):
                self._cancel(slot)
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
                if slot.followers:
                    self._branch(slot)
                else:
                    self._sample(slot, slot.logits_index)

    def _cancel(self, slot: _Slot) -> None:
        heirs = slot.followers
        if not heirs:
            self._finish(slot, "cancelled")
            return
        # The choice reading its group's prompt is cancelled: a waiting choice takes its
        # place in this slot, so the prompt is still read once, and the cancelled request
        # ends in the heir's slot, whose own KV was never touched.
        heir = heirs.pop(0)
        heir.source = None
        slot.job, heir.job = heir.job, slot.job
        slot.sampler, heir.sampler = heir.sampler, slot.sampler
        self._finish(heir, "cancelled")

    def _branch(self, source: _Slot) -> None:
        """The group's prompt is read: copy its KV into each waiting choice's sequence, and
        let every choice draw its first token from this one row of logits."""
        followers, source.followers = source.followers, []
        copy_sequence(
            self._shape, source.seq, [follower.seq for follower in followers], len(source.cached)
        )
        for follower in followers:
            follower.source = None
            follower.cached = list(source.cached)
            follower.prefilled = follower.last_used = source.last_used
        index = source.logits_index
        row = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._context, index), shape=(self._model.n_vocab,)
        )
        pristine = row.copy()  # a sampler biases and penalises the row in place
        self._sample(source, index)
        for follower in followers:
            row[:] = pristine
            self._sample(follower, index)

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

    def _sample(self, slot: _Slot, logits_index: int) -> None:
        assert slot.job is not None and slot.sampler is not None
        if slot.generated >= slot.limit:
            self._finish(slot, "length")
            return
        token = slot.sampler.sample(self._context, logits_index)
        if slot.first_token_at is None:
            slot.first_token_at = time.perf_counter()
        if self._model.is_end_of_generation(token):
            self._finish(slot, "stop")
            return
        slot.generated += 1
        top = slot.job.params.logprobs
        if top is not None:  # from the logits the sampler saw (biases and penalties applied)
            logits = llama_cpp.llama_get_logits_ith(self._context, logits_index)
            slot.logprobs.append(token_logprob(self._model, logits, token, top))
        # Special tokens are written out: a tool call's marker ([TOOL_CALLS], <|python_tag|>)
        # is a control token in some vocabularies, and its parser must see it.
        piece = self._model.token_bytes(token, special=True)
        text = slot.stops.feed(slot.assembler.feed(piece))
        if text:
            slot.job.handle.push(TokenEvent(text, tuple(slot.logprobs)))
            slot.logprobs.clear()
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
        if (tail or slot.logprobs) and reason != "cancelled":
            job.handle.push(TokenEvent(tail, tuple(slot.logprobs)))
        slot.logprobs.clear()
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
        if slot.source is not None:  # a choice ended before its copy: it waits no more
            slot.source.followers.remove(slot)
        for follower in slot.followers:  # only on failures, which end its followers too
            follower.source = None
        slot.source, slot.followers = None, []
        slot.job, slot.sampler, slot.next_token = None, None, None
        slot.pending = []  # the KV of what was evaluated stays, for prefix reuse
        with self._wakeup:
            self._wakeup.notify()  # a queued job may take this slot

    def _cancel_everything(self) -> None:
        for slot in self._slots:
            if slot.job is not None:
                self._finish(slot, "cancelled")
        now = time.perf_counter()
        for job in self._queued_jobs(list(self._jobs)):
            if isinstance(job, EmbedJob):
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
        for job in self._queued_jobs(jobs):
            if isinstance(job, EmbedJob):
                if not job.result.done():
                    job.result.set_exception(EngineUnavailableError(message))
            else:
                job.handle.push(ErrorEvent(message, unavailable=True))

    @staticmethod
    def _queued_jobs(queued: list[_Job | _Group | EmbedJob]) -> list[_Job | EmbedJob]:
        """The queue with each group's choices in place of the group."""
        return [
            job
            for entry in queued
            for job in (entry.jobs if isinstance(entry, _Group) else [entry])
        ]

    def _forget_cache(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, True)
        for slot in self._slots:
            slot.cached.clear()
