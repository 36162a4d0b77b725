"""Benchmark models, built once and cached: random weights of a real model's shape.

Speed does not depend on the weights' values, so a random-weight model with Qwen2.5-0.5B's
shape, the real Qwen2 tokenizer and chat template, quantised to Q4_K_M (398 MB, the size of the
real Qwen2.5-0.5B-Instruct Q4_K_M) measures real prefill and decode speed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hoshikage.engine.quantize import quantize_model
from hoshikage.models.synthetic import QWEN2_5_0_5B, build_random_model_like

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = PROJECT_ROOT.parent / "shared" / "models"
CACHE_DIR = PROJECT_ROOT / ".bench-cache"
STORIES = SHARED_MODELS / "stories260K.gguf"
QWEN2_VOCAB = SHARED_MODELS / "vocab" / "ggml-vocab-qwen2.gguf"


def qwen_shaped_model(cache_dir: Path = CACHE_DIR) -> Path:
    """The Q4_K_M random-weight Qwen2.5-0.5B-shaped model, built on first use (~1 min)."""
    target = cache_dir / "qwen2.5-0.5b-shape-random-q4_k_m.gguf"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Built under names of this process's own and renamed when complete: two benchmarks
    # started together never see (or write into) each other's half-written file.
    f16 = cache_dir / f"qwen2.5-0.5b-shape-random-f16.{os.getpid()}.gguf"
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    log.info("building %s (random weights, Qwen2 vocabulary)", f16.name)
    build_random_model_like(f16, QWEN2_VOCAB, QWEN2_5_0_5B, seed=0)
    log.info("quantising to %s", target.name)
    quantize_model(f16, partial, "Q4_K_M")
    f16.unlink()
    partial.replace(target)
    return target


# For child processes that run llama-cpp-python's own API (the anchors): where this CPU's AMX
# kernels crash, load models without llama.cpp's extra CPU buffer types, as Hoshikage does.
LLAMA_CPP_AMX_GUARD = r"""
import llama_cpp
from hoshikage.engine.amx_probe import amx_is_broken
if amx_is_broken():  # the same guard Hoshikage applies, or this anchor would crash here
    default_params = llama_cpp.llama_model_default_params
    def guarded_params():
        params = default_params()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_model_default_params = guarded_params
    llama_cpp.llama_cpp.llama_model_default_params = guarded_params
"""
