"""`hoshikage bench`: one model's load time, time to first token, speeds and memory."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from itertools import cycle, islice
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hoshikage.config import Settings
from hoshikage.engine import Engine, EngineError, PreparedPrompt, SamplingParams
from hoshikage.runtime import load_options, resolve_model
from hoshikage.sysinfo import gpu_memory, human_bytes, peak_rss_bytes

FILLER = (
    "The quick brown fox jumps over the lazy dog while the stars of the night sky "
    "cast their shadows on the quiet river that runs through the old town. "
)


@dataclass(frozen=True)
class BenchReport:
    model: str
    backend: str
    n_gpu_layers: int
    n_ctx: int
    threads: int | None
    prompt_tokens: int
    gen_tokens: int
    repetitions: int
    load_s: float
    time_to_first_token_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    decode_tokens_per_s_stdev: float
    peak_rss_bytes: int
    gpu_memory_used_bytes: int | None


def bench_prompt(engine: Engine, n_tokens: int, variant: int) -> list[int]:
    """Exactly n_tokens: BOS, then filler tokens starting at a per-run offset.

    Each run's prompt differs right after BOS, so no run reuses another's KV cache and every
    run measures a full prefill, as llama-bench does.
    """
    filler = engine.model.tokenize(FILLER, add_special=False)
    start = [engine.model.bos_id] if engine.model.add_bos else []
    body = list(islice(cycle(filler), variant, variant + n_tokens - len(start)))
    return start + body


def _too_small(n_ctx: int, prompt_tokens: int, gen_tokens: int) -> str:
    return (
        f"the context window holds {n_ctx} tokens, too few for {prompt_tokens} prompt and "
        f"{gen_tokens} generated tokens: lower --prompt-tokens or --gen-tokens, or raise --n-ctx"
    )


def run_bench(
    settings: Settings, *, prompt_tokens: int, gen_tokens: int, repetitions: int
) -> BenchReport:
    path: Path = resolve_model(settings.model, settings)
    n_ctx = settings.n_ctx or 0
    options = load_options(settings)
    if n_ctx and n_ctx < prompt_tokens + gen_tokens:
        raise EngineError(_too_small(n_ctx, prompt_tokens, gen_tokens))
    with Engine(path, options) as engine:
        # The engine caps n_ctx at the model's training context (and 0 means that context).
        if engine.n_ctx < prompt_tokens + gen_tokens:
            raise EngineError(_too_small(engine.n_ctx, prompt_tokens, gen_tokens))
        params = SamplingParams(temperature=0.0, max_tokens=gen_tokens, ignore_eos=True)
        # One untimed warm-up run: the first decode pays one-off costs (page faults, graphs).
        engine.generate(PreparedPrompt(bench_prompt(engine, 16, 99), 0, 4), params).wait()
        ttfts, prefill, decode = [], [], []
        for run in range(repetitions):
            prompt = bench_prompt(engine, prompt_tokens, run)
            finish = engine.generate(PreparedPrompt(prompt, 0, gen_tokens), params).wait()
            ttfts.append(finish.timings.time_to_first_token_s)
            prefill.append(finish.timings.prefill_tokens_per_s)
            decode.append(finish.timings.decode_tokens_per_s)
        gpus = gpu_memory()
        return BenchReport(
            model=str(path),
            backend=engine.info.backend,
            n_gpu_layers=engine.info.n_gpu_layers,
            n_ctx=engine.n_ctx,
            threads=settings.n_threads,
            prompt_tokens=prompt_tokens,
            gen_tokens=gen_tokens,
            repetitions=repetitions,
            load_s=engine.info.load_seconds,
            time_to_first_token_s=statistics.mean(ttfts),
            prefill_tokens_per_s=statistics.mean(prefill),
            decode_tokens_per_s=statistics.mean(decode),
            decode_tokens_per_s_stdev=statistics.stdev(decode) if len(decode) > 1 else 0.0,
            peak_rss_bytes=peak_rss_bytes(),
            gpu_memory_used_bytes=sum(gpu.used_bytes for gpu in gpus) if gpus else None,
        )


def print_report(console: Console, report: BenchReport, *, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(asdict(report)))
        return
    table = Table(title=f"hoshikage bench · {Path(report.model).name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("backend", f"{report.backend} (GPU layers {report.n_gpu_layers})")
    table.add_row("load time", f"{report.load_s:.3f} s")
    table.add_row(
        f"time to first token (pp{report.prompt_tokens})",
        f"{report.time_to_first_token_s * 1000:.1f} ms",
    )
    table.add_row(f"prefill (pp{report.prompt_tokens})", f"{report.prefill_tokens_per_s:.1f} tok/s")
    table.add_row(
        f"decode (tg{report.gen_tokens})",
        f"{report.decode_tokens_per_s:.1f} ± {report.decode_tokens_per_s_stdev:.1f} tok/s",
    )
    table.add_row("peak RSS", human_bytes(report.peak_rss_bytes))
    if report.gpu_memory_used_bytes is not None:
        table.add_row("GPU memory used", human_bytes(report.gpu_memory_used_bytes))
    console.print(table)
