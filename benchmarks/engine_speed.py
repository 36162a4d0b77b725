"""Engine speed: `hoshikage bench` against llama-cpp-python's own Llama class, same run.

    python benchmarks/engine_speed.py [--threads N] [--prompt-tokens 128] [--gen-tokens 64]

Both sides use the same llama.cpp build, threads, context and batch size, each in a fresh
process (so peak RSS is its own), on stories260K and on a random-weight model of
Qwen2.5-0.5B's shape (Q4_K_M). Where llama.cpp's AMX kernels crash (see README), both sides
load models without extra CPU buffer types. Ratios above 1.0 mean Hoshikage is faster (for time to
first token and memory, lower is better and the ratio is anchor / hoshikage).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.models import LLAMA_CPP_AMX_GUARD, STORIES, qwen_shaped_model

# Runs in a child process: llama-cpp-python's high-level API streaming a completion.
ANCHOR_SCRIPT = (
    r"""
import json, resource, statistics, sys, time
from itertools import cycle, islice
path = sys.argv[1]
threads, n_ctx, n_batch, n_prompt, n_gen, reps = map(int, sys.argv[2:8])
"""
    + LLAMA_CPP_AMX_GUARD
    + r"""
started = time.perf_counter()
llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
load_s = time.perf_counter() - started
filler = llm.tokenize(b"The quick brown fox jumps over the lazy dog while the stars of the night "
                      b"sky cast their shadows on the quiet river that runs through the old town. ",
                      add_bos=False)
eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)]
ban = {t: -float("inf") for t in eog}
def run(variant, count, gen):
    prompt = [llm.token_bos()] + list(islice(cycle(filler), variant, variant + count - 1))
    llm.reset()
    t0 = time.perf_counter(); stamps = []
    for _ in llm.create_completion(prompt, max_tokens=gen, temperature=0.0, stream=True,
                                   logit_bias=ban):
        stamps.append(time.perf_counter())
    return t0, stamps
run(99, 16, 4)
ttft, decode = [], []
for rep in range(reps):
    t0, stamps = run(rep, n_prompt, n_gen)
    ttft.append(stamps[0] - t0)
    decode.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
print(json.dumps({"load_s": load_s, "time_to_first_token_s": statistics.mean(ttft),
                  "decode_tokens_per_s": statistics.mean(decode),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
)


def hoshikage_bench(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "hoshikage", "bench", "--model", str(model), "--json",
        "--threads", str(args.threads), "--n-ctx", str(args.n_ctx),
        "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
        "--repetitions", str(args.repetitions), "--backend", "cpu",
    ]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def anchor_bench(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-c", ANCHOR_SCRIPT, str(model), str(args.threads), str(args.n_ctx),
        "512", str(args.prompt_tokens), str(args.gen_tokens), str(args.repetitions),
    ]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    models = {"stories260K": STORIES, "qwen2.5-0.5b-shape Q4_K_M": qwen_shaped_model()}
    rows = []
    for label, path in models.items():
        ours, anchor = hoshikage_bench(path, args), anchor_bench(path, args)
        rows.append((label, ours, anchor))

    header = f"{'model':28} {'measure':26} {'hoshikage':>12} {'llama-cpp-python':>17} {'ratio':>7}"
    print(
        f"\nthreads={args.threads} pp={args.prompt_tokens} tg={args.gen_tokens} "
        f"reps={args.repetitions} (ratio > 1: hoshikage better)"
    )
    print(header)
    print("-" * len(header))
    for label, ours, anchor in rows:
        measures = [
            ("decode tok/s", ours["decode_tokens_per_s"], anchor["decode_tokens_per_s"], True),
            ("time to first token ms", ours["time_to_first_token_s"] * 1e3,
             anchor["time_to_first_token_s"] * 1e3, False),
            ("load s", ours["load_s"], anchor["load_s"], False),
            ("peak RSS MiB", ours["peak_rss_bytes"] / 2**20, anchor["peak_rss_bytes"] / 2**20,
             False),
        ]  # fmt: skip
        for name, mine, theirs, higher_is_better in measures:
            ratio = mine / theirs if higher_is_better else theirs / mine
            print(f"{label:28} {name:26} {mine:12.2f} {theirs:17.2f} {ratio:7.2f}")
        print(
            f"{label:28} {'prefill tok/s':26} {ours['prefill_tokens_per_s']:12.1f} "
            f"{'—':>17} {'':>7}"
        )


if __name__ == "__main__":
    main()
