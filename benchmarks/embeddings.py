"""Embedding speed: Hoshikage's Engine.embed against llama-cpp-python's Llama.embed, same run.

    python -m benchmarks.embeddings [--threads N] [--repetitions 5]

256 short sentences (about 11 tokens each), embedded with all-MiniLM-L6-v2 (Q8_0) from
../shared/models, each side in a fresh process on the same llama.cpp build: Hoshikage's
`Engine.embed` with its embedding defaults (16 inputs, at most 512 tokens per decode) against
llama-cpp-python's `Llama(embedding=True).embed` (it packs inputs up to its n_batch of 512
tokens), both with the same threads, the model's 512-token window and flash attention on.
Measured: texts/s for all 256 in one call, and for one text per call; the median of the
repetitions, after a warm-up. Where llama.cpp's AMX kernels crash (see README), both sides load
the model without extra CPU buffer types. Ratios above 1.0 mean Hoshikage is faster.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.models import LLAMA_CPP_AMX_GUARD, SHARED_MODELS

MINILM = SHARED_MODELS / "all-MiniLM-L6-v2-q8_0.gguf"
N_TEXTS = 256

# Both children read the texts as JSON on stdin and print one JSON line: speeds and vectors.
HOSHIKAGE_SCRIPT = r"""
import json, statistics, sys, time
from pathlib import Path
from hoshikage.engine import Engine, LoadOptions

path, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
texts = json.load(sys.stdin)
options = LoadOptions(n_ctx=0, embedding=True, n_threads=threads, flash_attn="on",
                      backend="cpu")
with Engine(Path(path), options) as engine:
    engine.embed(texts[:32]).result()
    batch, single = [], []
    for _ in range(reps):
        started = time.perf_counter()
        vectors = engine.embed(texts).result().vectors
        batch.append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        for text in texts:
            engine.embed([text]).result()
        single.append(len(texts) / (time.perf_counter() - started))
print(json.dumps({"batch_texts_per_s": statistics.median(batch),
                  "single_texts_per_s": statistics.median(single), "vectors": vectors}))
"""

ANCHOR_SCRIPT = (
    r"""
import json, statistics, sys, time
path, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
texts = json.load(sys.stdin)
"""
    + LLAMA_CPP_AMX_GUARD
    + r"""
llm = llama_cpp.Llama(path, embedding=True, n_ctx=0, n_batch=512, n_ubatch=512,
                      n_threads=threads, n_threads_batch=threads, flash_attn=True,
                      verbose=False)
llm.embed(texts[:32], normalize=True)
batch, single = [], []
for _ in range(reps):
    started = time.perf_counter()
    vectors = llm.embed(texts, normalize=True)
    batch.append(len(texts) / (time.perf_counter() - started))
    started = time.perf_counter()
    for text in texts:
        llm.embed(text, normalize=True)
    single.append(len(texts) / (time.perf_counter() - started))
print(json.dumps({"batch_texts_per_s": statistics.median(batch),
                  "single_texts_per_s": statistics.median(single), "vectors": vectors}))
"""
)


def sentences(count: int = N_TEXTS) -> list[str]:
    """Distinct short sentences, the size of typical search queries and titles."""
    subjects = ["The cat", "My neighbour", "A small robot", "The old teacher", "Our team",
                "The river", "A tired student", "The city council"]  # fmt: skip
    verbs = ["quietly watched", "carefully repaired", "happily painted", "suddenly found"]
    objects = ["the broken fence", "a bright red kite", "the morning news", "an ancient map",
               "the last train", "a bowl of soup", "the garden", "a secret letter"]  # fmt: skip
    combos = itertools.product(subjects, verbs, objects)
    return [f"{subject} {verb} {thing}." for subject, verb, thing in combos][:count]


def run_side(script: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-c", script, str(MINILM), str(args.threads), str(args.repetitions)]
    output = subprocess.run(
        command, input=json.dumps(texts), check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    texts = sentences()
    ours = run_side(HOSHIKAGE_SCRIPT, texts, args)
    anchor = run_side(ANCHOR_SCRIPT, texts, args)
    # Both sides must compute the same vectors, or the speeds are not comparable.
    agreement = float(
        np.min(np.sum(np.asarray(ours["vectors"]) * np.asarray(anchor["vectors"]), axis=1))
    )

    print(
        f"\nall-MiniLM-L6-v2 Q8_0, {len(texts)} short sentences, threads={args.threads}, "
        f"median of {args.repetitions} (ratio > 1: hoshikage faster)"
    )
    header = f"{'measure':34} {'hoshikage':>10} {'llama-cpp-python':>17} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for label, key in (
        (f"texts/s, {len(texts)} in one call", "batch_texts_per_s"),
        ("texts/s, one text per call", "single_texts_per_s"),
    ):
        mine, theirs = ours[key], anchor[key]
        print(f"{label:34} {mine:10.1f} {theirs:17.1f} {mine / theirs:7.2f}")
    print(f"vectors agree: lowest cosine between the two sides {agreement:.6f}")


if __name__ == "__main__":
    main()
