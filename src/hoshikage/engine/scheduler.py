"""The engine thread: the only code that runs llama_decode. Requests in, token events out.

One dedicated thread owns the llama.cpp context and runs a step loop; callers submit from
any thread or event loop and never block on inference. Requests are served in arrival order,
one sequence at a time for now; the loop is written in steps (prefill chunks, then one
decode per token, cancellation checked between steps) so that a batching scheduler can
later step several sequences per llama_decode behind the same submit/cancel interface.

The context keeps the KV cache of the last sequence: a request whose tokens start with the
same prefix (the next turn of a chat) only evaluates what is new.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import llama_cpp

from hoshikage.engine.generation import Generation
from hoshikage.engine.model import LlamaModel
from hoshikage.engine.sampling import Sampler
from hoshikage.engine.text_stream import StopMatcher, Utf8Assembler
from hoshikage.engine.types import (
    ContextOverflowError,
    EmbeddingResult,
    EngineError,
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
_SEQ = 0  # the one sequence served at a time


@dataclass(frozen=True)
class ContextConfig:
    n_ctx: int
    n_batch: int
    n_threads: int
    flash_attn: str = "auto"
    kv_cache_type: str = "f16"
    embedding: bool = False  # pooled embeddings instead of generation


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


class _JobCancelled(Exception):
    pass


def common_prefix_length(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


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
        self._model = model
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.n_ctx
        params.n_batch = config.n_batch
        params.n_ubatch = config.n_batch
        params.n_seq_max = 1
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        params.flash_attn_type = FLASH_ATTENTION[config.flash_attn]
        params.type_k = KV_TYPES[config.kv_cache_type]
        params.type_v = KV_TYPES[config.kv_cache_type]
        params.no_perf = True
        if config.embedding:
            # Encoders see the whole input at once: one micro-batch holds a full window.
            params.embeddings = True
            params.n_ubatch = params.n_batch = config.n_ctx
        context = llama_cpp.llama_init_from_model(model.pointer, params)
        if not context:
            raise EngineError(
                f"llama.cpp could not create a context of {config.n_ctx} tokens: out of memory "
                f"(try a smaller n_ctx), or a KV cache type this model cannot use (quantised "
                f"types need a head size that is a multiple of 32; try kv_cache_type f16)"
            )
        self._context = context
        self._memory = llama_cpp.llama_get_memory(context)
        self.n_ctx = int(llama_cpp.llama_n_ctx(context))
        # llama.cpp may round n_ctx up and caps n_batch at the n_ctx asked for: use its values.
        self.n_batch = int(llama_cpp.llama_n_batch(context))
        self._batch = llama_cpp.llama_batch_init(config.n_batch, 0, 1)
        self._cached: list[int] = []  # tokens whose KV the context holds, in order
        self._last_logits_index = 0  # where in the last batch the logits to sample are
        self.embedding = config.embedding
        self._n_embd = int(llama_cpp.llama_model_n_embd(model.pointer))
        self._jobs: collections.deque[_Job | _EmbedJob] = collections.deque()
        self._wakeup = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="hoshikage-engine", daemon=True)
        self._thread.start()

    # --- caller side ---------------------------------------------------------------------
    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> Generation:
        handle = Generation()
        with self._wakeup:
            if self._closing:
                raise EngineError("the engine is shut down")
            self._jobs.append(_Job(prompt, params, handle, time.perf_counter()))
            self._wakeup.notify()
        return handle

    def submit_embedding(self, inputs: list[list[int]]) -> Future[EmbeddingResult]:
        """Embed token lists on the engine thread; the future holds the vectors."""
        result: Future[EmbeddingResult] = Future()
        with self._wakeup:
            if self._closing:
                raise EngineError("the engine is shut down")
            self._jobs.append(_EmbedJob(inputs, result))
            self._wakeup.notify()
        return result

    @property
    def cached_tokens(self) -> int:
        return len(self._cached)

    @property
    def queue_depth(self) -> int:
        return len(self._jobs)

    @property
    def busy(self) -> bool:
        return self._busy

    def close(self) -> None:
        """Stop the thread (ending any request as cancelled) and free the context."""
        with self._wakeup:
            if self._closing:
                return
            self._closing = True
            for job in self._jobs:
                if isinstance(job, _Job):
                    job.handle.cancel()
                else:
                    job.result.cancel()
            self._wakeup.notify_all()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._context)

    # --- engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._jobs and not self._closing:
                    self._wakeup.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                if self._closing and isinstance(job, _Job):
                    job.handle.cancel()
                self._busy = True
            if isinstance(job, _EmbedJob):
                self._serve_embedding(job)
                continue
            try:
                self._serve(job)
            except Exception as exc:  # never let one request take the engine thread down
                log.error("generation failed: %s", exc)
                log.debug("generation failure details", exc_info=True)
                self._forget_cache()
                job.handle.push(ErrorEvent(f"generation failed: {exc}"))
            finally:
                self._busy = False

    def _serve(self, job: _Job) -> None:
        started = time.perf_counter()
        tokens = job.prompt.tokens
        if not tokens:
            raise EngineError("the prompt is empty")
        reused = self._reuse_prefix(tokens)
        sampler = Sampler(job.params, self._model)
        try:
            self._prefill(job, tokens, reused)
        except _JobCancelled:
            sampler.close()
            now = time.perf_counter()
            job.handle.push(self._finish(job, "cancelled", 0, reused, started, now, now, now))
            return
        prefilled = time.perf_counter()
        sampler.remember(tokens[-job.params.repeat_last_n :] if job.params.repeat_last_n else [])
        try:
            self._generate(job, sampler, len(tokens), reused, started, prefilled)
        finally:
            sampler.close()

    def _serve_embedding(self, job: _EmbedJob) -> None:
        if not job.result.set_running_or_notify_cancel():
            self._busy = False
            return
        try:
            vectors = [self._embed_one(tokens) for tokens in job.inputs]
            job.result.set_result(
                EmbeddingResult(vectors, sum(len(tokens) for tokens in job.inputs))
            )
        except Exception as exc:
            job.result.set_exception(exc)
        finally:
            self._forget_cache()
            self._busy = False

    def _embed_one(self, tokens: list[int]) -> list[float]:
        if not tokens:
            raise EngineError("cannot embed an empty input")
        if len(tokens) > self.n_batch:
            raise ContextOverflowError(
                f"an input of {len(tokens)} tokens is longer than the model's "
                f"{self.n_batch}-token window",
                n_prompt_tokens=len(tokens),
                n_ctx=self.n_batch,
            )
        self._forget_cache()
        batch = self._batch
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = _SEQ
            batch.logits[index] = True
        batch.n_tokens = len(tokens)
        if llama_cpp.llama_decode(self._context, batch) != 0:
            raise EngineError("llama_decode failed while embedding")
        pooled = llama_cpp.llama_get_embeddings_seq(self._context, _SEQ)
        if pooled:
            vector = [float(pooled[i]) for i in range(self._n_embd)]
        else:  # no pooling in this model: average the token vectors
            sums = [0.0] * self._n_embd
            for index in range(len(tokens)):
                row = llama_cpp.llama_get_embeddings_ith(self._context, index)
                for dim in range(self._n_embd):
                    sums[dim] += row[dim]
            vector = [value / len(tokens) for value in sums]
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the cached KV that matches the prompt's start; return how many tokens that is."""
        keep = common_prefix_length(self._cached, tokens)
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be evaluated again to get its logits
        if not llama_cpp.llama_memory_seq_rm(self._memory, _SEQ, keep, -1):
            keep = 0  # this model's memory cannot drop a tail (recurrent): start over
            llama_cpp.llama_memory_clear(self._memory, True)
        del self._cached[keep:]
        return keep

    def _prefill(self, job: _Job, tokens: list[int], start: int) -> None:
        position = start
        while position < len(tokens):
            if job.handle.cancel_requested or self._closing:
                raise _JobCancelled
            chunk = tokens[position : position + self.n_batch]
            self._decode(chunk, position, logits_for_last=position + len(chunk) == len(tokens))
            position += len(chunk)

    def _generate(
        self,
        job: _Job,
        sampler: Sampler,
        n_prompt: int,
        reused: int,
        started: float,
        prefilled: float,
    ) -> None:
        handle = job.handle
        assembler = Utf8Assembler()
        stops = StopMatcher(job.params.stop)
        limit = min(job.prompt.max_new_tokens, self.n_ctx - n_prompt)
        generated = 0
        first_token_at: float | None = None
        reason: FinishReason = "length"
        logits_index = self._last_logits_index
        while True:
            if handle.cancel_requested or self._closing:
                reason = "cancelled"
                break
            if generated >= limit:
                reason = "length"
                break
            token = sampler.sample(self._context, logits_index)
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if self._model.is_end_of_generation(token):
                reason = "stop"
                break
            generated += 1
            text = stops.feed(assembler.feed(self._model.token_bytes(token)))
            if text:
                handle.push(TokenEvent(text))
            if stops.stopped:
                reason = "stop"
                break
            if generated >= limit:
                continue  # no need to evaluate a token nobody will extend
            self._decode([token], n_prompt + generated - 1, logits_for_last=True)
            logits_index = 0
        tail = stops.feed(assembler.flush()) + stops.flush()
        if tail:
            handle.push(TokenEvent(tail))
        now = time.perf_counter()
        handle.push(
            self._finish(
                job, reason, generated, reused, started, prefilled, first_token_at or now, now
            )
        )

    def _decode(self, tokens: list[int], start_position: int, *, logits_for_last: bool) -> None:
        batch = self._batch
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = start_position + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = _SEQ
            batch.logits[index] = False
        if logits_for_last:
            batch.logits[len(tokens) - 1] = True
        batch.n_tokens = len(tokens)
        self._last_logits_index = len(tokens) - 1
        status = llama_cpp.llama_decode(self._context, batch)
        if status != 0:
            self._forget_cache()
            raise EngineError(
                f"llama_decode failed with status {status}"
                + (" (no room left in the KV cache)" if status == 1 else "")
            )
        self._cached.extend(tokens)

    def _forget_cache(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, True)
        self._cached.clear()

    def _finish(
        self,
        job: _Job,
        reason: FinishReason,
        generated: int,
        reused: int,
        started: float,
        prefilled: float,
        first_token_at: float,
        ended: float,
    ) -> FinishEvent:
        n_prompt = len(job.prompt.tokens)
        return FinishEvent(
            finish_reason=reason,
            usage=Usage(
                prompt_tokens=n_prompt, completion_tokens=generated, cached_prompt_tokens=reused
            ),
            timings=Timings(
                queued_s=started - job.submitted_at,
                time_to_first_token_s=first_token_at - job.submitted_at,
                prompt_eval_s=prefilled - started,
                decode_s=ended - first_token_at if generated > 1 else 0.0,
                total_s=ended - job.submitted_at,
                prompt_tokens_evaluated=n_prompt - reused,
                decode_tokens=max(generated - 1, 0),
            ),
            dropped_messages=job.prompt.dropped_messages,
        )
