"""The llama.cpp context the engine thread decodes with, shaped from the load options.

A generation context has one KV stream per slot (kv_unified off, llama.cpp's default for
several sequences): each slot's attention reads only its own window, and one slot's long
history costs the others nothing. A sequence's KV can still be copied into another slot (a
group of choices, see the scheduler): see copy_sequence.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp

from hoshikage.engine.embedding_batch import EMBEDDING_BATCH_TOKENS, EMBEDDING_SEQUENCES
from hoshikage.engine.model import LlamaModel
from hoshikage.engine.types import EngineError

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
# A sequence's KV in host memory is copied as its state while it fills less than this share
# of a window; beyond, and on a GPU, llama.cpp's copy between streams is cheaper (see
# copy_sequence).
HOST_COPY_SHARE = 0.5


@dataclass(frozen=True)
class ContextConfig:
    n_ctx: int
    n_batch: int
    n_threads: int
    flash_attn: str = "auto"
    kv_cache_type: str = "f16"
    embedding: bool = False  # pooled embeddings instead of generation
    n_slots: int = 1  # sequences decoded together (llama-server's --parallel)


@dataclass(frozen=True)
class Context:
    """A created context and the shape llama.cpp gave it; the caller frees `pointer`."""

    pointer: llama_cpp.llama_context_p
    n_ctx: int  # one slot's window (for embeddings: the longest input)
    n_batch: int
    n_slots: int
    pooled: bool  # llama.cpp pools each sequence's embedding (else: mean of token vectors)
    kv_on_host: bool  # no layer is offloaded, so neither is any KV


def create_context(model: LlamaModel, config: ContextConfig) -> Context:
    if config.kv_cache_type not in KV_TYPES:
        raise EngineError(
            f"unknown KV cache type {config.kv_cache_type!r}; one of {', '.join(KV_TYPES)}"
        )
    if config.flash_attn not in FLASH_ATTENTION:
        raise EngineError(f"unknown flash_attn value {config.flash_attn!r}; one of auto, on, off")
    if config.kv_cache_type not in ("f16", "f32", "bf16") and config.flash_attn == "off":
        raise EngineError(
            f"a quantised KV cache ({config.kv_cache_type}) needs flash attention: "
            f"set flash_attn to 'auto' or 'on', or kv_cache_type to 'f16'"
        )
    if config.n_slots < 1:
        raise EngineError("parallel must be at least 1")
    n_slots = 1 if config.embedding else config.n_slots
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
        params.n_ctx = params.n_batch = params.n_ubatch = max(config.n_ctx, EMBEDDING_BATCH_TOKENS)
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
    n_ctx = int(llama_cpp.llama_n_ctx_seq(context))  # one slot's window
    # llama.cpp may round n_ctx up and caps n_batch at the n_ctx asked for: use its values.
    n_batch = int(llama_cpp.llama_n_batch(context))
    pooled = False
    if config.embedding:
        n_batch = min(n_batch, int(llama_cpp.llama_n_ubatch(context)))
        n_ctx = min(config.n_ctx, n_ctx)  # the longest input: the model's window
        pooling = int(llama_cpp.llama_pooling_type(context))
        if pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK or n_batch < n_ctx:
            llama_cpp.llama_free(context)
            raise EngineError(
                "this model is a reranker: it scores pairs, it does not embed"
                if pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK
                else f"llama.cpp gave an embedding batch of {n_batch} tokens, "
                f"shorter than the {n_ctx}-token window"
            )
        pooled = pooling != llama_cpp.LLAMA_POOLING_TYPE_NONE
    return Context(context, n_ctx, n_batch, n_slots, pooled, model.n_gpu_layers == 0)


def copy_sequence(context: Context, source: int, targets: list[int], n_tokens: int) -> None:
    """Give each target sequence the KV of the source's n_tokens, in place of its own.

    llama.cpp copies between streams by copying the source stream's whole buffers, n_ctx
    cells of every layer, at the start of the next decode: about 9 ms per copy on CPU for a
    4096-token window of Qwen2.5-0.5B's shape, 85 ms for 32768, however short the prompt. The
    state of a sequence holds only its cells: out and back in, 0.4 ms for 32 tokens, 5 ms for
    512. On a GPU the stream copy stays in device memory, where the state would cross to the
    host and back in many small pieces.
    """
    memory = llama_cpp.llama_get_memory(context.pointer)
    state = None
    if context.kv_on_host and n_tokens < HOST_COPY_SHARE * context.n_ctx:
        size = llama_cpp.llama_state_seq_get_size(context.pointer, source)
        state = (ctypes.c_uint8 * size)()
        if not llama_cpp.llama_state_seq_get_data(context.pointer, state, size, source):
            state = None
    for target in targets:
        llama_cpp.llama_memory_seq_rm(memory, target, -1, -1)
        if state is not None and llama_cpp.llama_state_seq_set_data(
            context.pointer, state, len(state), target
        ):
            continue
        # Within one stream (kv_unified) this only tags cells: the target was emptied first.
        llama_cpp.llama_memory_seq_rm(memory, target, -1, -1)
        llama_cpp.llama_memory_seq_cp(memory, source, target, -1, -1)
