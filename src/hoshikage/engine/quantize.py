"""Quantise a GGUF model with llama.cpp's own quantiser (what llama-quantize runs)."""

from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path

import llama_cpp

from hoshikage.engine.backend import init_backend
from hoshikage.engine.formats import require_gguf
from hoshikage.engine.types import EngineError

log = logging.getLogger(__name__)

# The names llama-quantize and model cards use, to llama.cpp's file types.
FTYPES: dict[str, int] = {
    "F32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q5_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "Q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "Q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "Q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
    "IQ4_NL": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
}


def quantize_model(
    source: Path, target: Path, ftype: str = "Q4_K_M", n_threads: int | None = None
) -> Path:
    """Write `source` quantised to `ftype` at `target`; return `target`.

    The result appears under `target` only once complete, so an interrupted run never leaves
    a half-written model that looks loadable.
    """
    key = ftype.upper()
    if key not in FTYPES:
        raise EngineError(
            f"unknown quantisation type {ftype!r}; choose one of: {', '.join(FTYPES)}"
        )
    require_gguf(source)
    if target.resolve() == source.resolve():
        raise EngineError(f"quantising {source} onto itself would destroy it; pick another target")
    init_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[key]
    params.nthread = n_threads or 0  # 0: llama.cpp uses every hardware thread
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    started = time.perf_counter()
    try:
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if status != 0:
            raise EngineError(
                f"llama.cpp could not quantise {source} to {key} (status {status}): the "
                f"model's tensor shapes may not suit this type (k-quants need rows that are "
                f"multiples of 256); run with --log-level debug to see llama.cpp's reason"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    log.info(
        "quantised %s to %s as %s in %.1fs (%d -> %d bytes)",
        source.name,
        target,
        key,
        time.perf_counter() - started,
        source.stat().st_size,
        target.stat().st_size,
    )
    return target
