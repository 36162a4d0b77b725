"""Embedding decodes, run by the engine thread of an embedding context.

Inputs are packed: up to EMBEDDING_SEQUENCES inputs (and EMBEDDING_BATCH_TOKENS tokens, or one
input of up to a window), each its own sequence with positions from 0, share one
llama_decode; the memory is cleared after it. Queued embedding requests are served together,
so small concurrent requests share decodes too.
"""

from __future__ import annotations

import collections
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from hoshikage.engine.types import ContextOverflowError, EmbeddingResult, EngineError

log = logging.getLogger(__name__)

# Inputs one embedding decode may hold: the per-decode overhead that dominates short inputs
# is spread thin by 16 (64 was 2% faster with MiniLM on CPU, within the noise).
EMBEDDING_SEQUENCES = 16
# Tokens packed into one embedding decode (a single input may be longer, up to the window).
# Every token of a decode attends to all of the decode's tokens, masked or not, so the cost of
# packing grows with its square: on CPU, 256-512 tokens was fastest for short and mixed
# inputs, 2048 25-70% slower for medium and mixed lengths (MiniLM, stories260K).
EMBEDDING_BATCH_TOKENS = 512


@dataclass
class EmbedJob:
    inputs: list[list[int]]
    result: Future[EmbeddingResult]
    vectors: list[list[float]] = field(default_factory=list)  # filled in input order


class EmbeddingBatcher:
    """Packs embedding inputs into the context's decodes; the scheduler owns the context."""

    def __init__(
        self,
        context: llama_cpp.llama_context_p,
        batch: Any,
        *,
        n_batch: int,
        n_ctx: int,
        n_embd: int,
        pooled: bool,
    ) -> None:
        self._context = context
        self._memory = llama_cpp.llama_get_memory(context)
        self._batch = batch
        self._n_batch = n_batch
        self._n_ctx = n_ctx
        self._n_embd = n_embd
        self._pooled = pooled  # llama.cpp pools each sequence (else: mean of token vectors)
        self.decodes = 0  # llama_decode calls that embedded inputs (for status)

    def serve(self, jobs: list[EmbedJob]) -> None:
        """Embed every input of these jobs, as many inputs per decode as fit, in order."""
        queue: collections.deque[tuple[EmbedJob, list[int]]] = collections.deque()
        for job in jobs:
            if not job.result.set_running_or_notify_cancel():
                continue
            problem = self._input_error(job.inputs)
            if problem is not None:
                job.result.set_exception(problem)
            elif not job.inputs:
                job.result.set_result(EmbeddingResult([], 0))
            else:
                queue.extend((job, tokens) for tokens in job.inputs)
        budget = min(EMBEDDING_BATCH_TOKENS, self._n_batch)
        while queue:
            group: list[tuple[EmbedJob, list[int]]] = []
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

    def _input_error(self, inputs: list[list[int]]) -> EngineError | None:
        for tokens in inputs:
            if not tokens:
                return EngineError("cannot embed an empty input")
            if len(tokens) > self._n_ctx:
                return ContextOverflowError(
                    f"an input of {len(tokens)} tokens is longer than the model's "
                    f"{self._n_ctx}-token window",
                    n_prompt_tokens=len(tokens),
                    n_ctx=self._n_ctx,
                    input_name="input",
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
            self.decodes += 1
            status = llama_cpp.llama_decode(self._context, batch)
            if status != 0:
                raise EngineError(f"llama_decode failed with status {status} while embedding")
            vectors = np.empty((len(inputs), self._n_embd), dtype=np.float32)
            first = 0  # batch index of this input's first token
            for seq, tokens in enumerate(inputs):
                if self._pooled:
                    vectors[seq] = self._row(llama_cpp.llama_get_embeddings_seq(self._context, seq))
                else:  # no pooling in this model: average the token vectors
                    rows = range(first, first + len(tokens))
                    vectors[seq] = np.mean(
                        [
                            self._row(llama_cpp.llama_get_embeddings_ith(self._context, row))
                            for row in rows
                        ],
                        axis=0,
                    )
                first += len(tokens)
        finally:
            # The next decode's sequences start from position 0.
            llama_cpp.llama_memory_clear(self._memory, True)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0  # an all-zero vector stays zero rather than NaN
        normalised: npt.NDArray[np.float32] = vectors / norms
        return normalised

    def _row(self, pointer: Any) -> npt.NDArray[np.float32]:
        """A view of n_embd floats llama.cpp returned (NULL: an error, not a crash)."""
        if not pointer:
            raise EngineError("llama.cpp returned no embedding")
        row: npt.NDArray[np.float32] = np.ctypeslib.as_array(pointer, shape=(self._n_embd,))
        return row
