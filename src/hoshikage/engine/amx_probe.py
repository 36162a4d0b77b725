"""Does llama.cpp's AMX code work on this machine? Asked once, answered by a child process.

Some virtual machines advertise Intel AMX and grant the tile permission, yet AMX
instructions fault there; llama.cpp (built with -march=native) then kills the process with
SIGSEGV on the first matrix product of a quantised model. A child process decodes a tiny
Q8_0 model to find out safely; the verdict is cached per llama.cpp version, CPU and kernel.

Run as `python -m hoshikage.engine.amx_probe` it is that child.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import llama_cpp
import platformdirs

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120


def _cpu_flags_and_model() -> tuple[set[str], str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set(), ""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and not model:
            model = value.strip()
    return flags, model


def _build_has_amx() -> bool:
    info = bytes(llama_cpp.llama_print_system_info()).decode(errors="replace")
    return "AMX_INT8 = 1" in info


@functools.cache
def amx_is_broken() -> bool:
    """True when AMX is compiled in and advertised but crashes: avoid its buffer type."""
    flags, cpu_model = _cpu_flags_and_model()
    if "amx_int8" not in flags or not _build_has_amx():
        return False
    key = f"{llama_cpp.__version__}|{cpu_model}|{platform.release()}"
    cache_file = Path(platformdirs.user_cache_dir("hoshikage")) / "amx-probe.json"
    try:
        verdicts = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        verdicts = {}
    first_time = key not in verdicts
    if first_time:
        verdicts[key] = _probe_in_child()
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(verdicts, indent=1), encoding="utf-8")
        except OSError as exc:
            log.debug("cannot cache the AMX probe verdict: %s", exc)
    broken: bool = verdicts[key] == "broken"
    if broken:
        log.log(
            logging.WARNING if first_time else logging.INFO,
            "this CPU advertises AMX but llama.cpp's AMX kernels crash here (seen on some "
            "virtual machines); models load without llama.cpp's extra CPU buffer types "
            "(see README)",
        )
    return broken


def _probe_in_child() -> str:
    environment = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hoshikage.engine.amx_probe"],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            env=environment,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "broken"
    verdict = "works" if result.returncode == 0 else "broken"
    log.info("AMX probe: %s (exit code %d)", verdict, result.returncode)
    return verdict


def _decode_quantised_model() -> None:
    """The child's work: one decode through AMX's buffer type on a tiny Q8_0 model."""
    from hoshikage.engine.backend import init_backend
    from hoshikage.engine.quantize import quantize_model
    from hoshikage.models.synthetic import build_tiny_chat_model

    init_backend()
    with tempfile.TemporaryDirectory() as directory:
        source = build_tiny_chat_model(Path(directory) / "probe.gguf", n_embd=128, n_ff=256)
        quantised = quantize_model(source, Path(directory) / "probe-q8_0.gguf", "Q8_0")
        model = llama_cpp.llama_model_load_from_file(
            str(quantised).encode(), llama_cpp.llama_model_default_params()
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 64, 64, 1, 1
        context = llama_cpp.llama_init_from_model(model, params)
        batch = llama_cpp.llama_batch_init(8, 0, 1)
        for index in range(8):
            batch.token[index] = 3 + index
            batch.pos[index] = index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = index == 7
        batch.n_tokens = 8
        status = llama_cpp.llama_decode(context, batch)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(model)
        if status != 0:
            raise SystemExit(2)


if __name__ == "__main__":
    _decode_quantised_model()
