"""Grammar sampling: constrained decode against unconstrained, same model, same run.

    python -m benchmarks.grammar_sampling [--threads N] [--tokens 256] [--repetitions 3]

Greedy decode of the random-weight Qwen2.5-0.5B-shaped model (152k-token vocabulary) through
Hoshikage's engine, without a grammar, with a tool-call JSON-schema grammar, and with a lazy
grammar whose trigger never comes; each grammar both ways: checked after the chain's pick
(Hoshikage's sampler) and first in the chain on the whole vocabulary (llama.cpp's plain
chain, the old path). End-of-generation is banned and the grammar repeats its call, so every
run decodes the same number of tokens. Reported: decode tokens/s (median), the time spent
in the sampler per token, and the decode rate over the unconstrained one (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.models import CACHE_DIR, qwen_shaped_model
from hoshikage.engine import Engine, LoadOptions, SamplingParams, sampling
from hoshikage.engine.engine import default_threads
from hoshikage.engine.grammar import json_schema_grammar

TOOL_CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
}
_CALL = re.sub(r"^root ::=", "call ::=", json_schema_grammar(TOOL_CALL), flags=re.M)
# One call after another: with end-of-generation banned a grammar that could finish would
# leave nothing to sample (llama.cpp's grammar-first chain aborts there).
CALLS = f'root ::= call ("\\n" call)*\n{_CALL}'
LAZY_CALLS = f'root ::= "<tool_call>" call ("\\n" call)*\n{_CALL}'
PROMPT = "What is the weather in Paris? Call the get_weather tool."

# (label, grammar, triggers, grammar first)
CASES: list[tuple[str, str | None, tuple[str, ...], bool]] = [
    ("unconstrained", None, (), False),
    ("json schema, checked after the pick", CALLS, (), False),
    ("json schema, grammar first (old)", CALLS, (), True),
    ("lazy, not triggered, checked after", LAZY_CALLS, ("<tool_call>",), False),
    ("lazy, not triggered, grammar first (old)", LAZY_CALLS, ("<tool_call>",), True),
]


@contextmanager
def sampler_clock() -> Iterator[list[float]]:
    """Seconds spent in each Sampler.sample call, while inside the block."""
    spent: list[float] = []
    original = sampling.Sampler.sample

    def timed(self: sampling.Sampler, context: Any, logits_index: int) -> int:
        started = time.perf_counter()
        token = original(self, context, logits_index)
        spent.append(time.perf_counter() - started)
        return token

    sampling.Sampler.sample = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        sampling.Sampler.sample = original  # type: ignore[method-assign]


def run(
    engine: Engine, grammar: str | None, triggers: tuple[str, ...], first: bool, n: int
) -> dict[str, Any]:
    params = SamplingParams(
        temperature=0.0,
        max_tokens=n,
        ignore_eos=True,
        grammar=grammar,
        grammar_triggers=triggers,
    )
    sampling._GRAMMAR_FIRST = first  # the private switch to the old path, for this comparison
    try:
        with sampler_clock() as spent:
            generation = engine.complete(PROMPT, params)
            finish = generation.wait()
    finally:
        sampling._GRAMMAR_FIRST = False
    if finish.usage.completion_tokens != n:
        raise RuntimeError(f"decoded {finish.usage.completion_tokens} tokens, not {n}")
    return {
        "decode_tokens_per_s": finish.timings.decode_tokens_per_s,
        "sampler_ms_per_token": 1e3 * statistics.mean(spent),
        "text": generation.text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = qwen_shaped_model()
    options = LoadOptions(n_ctx=args.tokens + 128, n_threads=args.threads, backend="cpu")
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in CASES}
    with Engine(model, options) as engine:
        run(engine, CALLS, (), False, 16)  # warm-up
        for _ in range(args.repetitions):  # interleaved, so drift touches every case alike
            for label, grammar, triggers, first in CASES:
                results[label].append(run(engine, grammar, triggers, first, args.tokens))

    def median(label: str, key: str) -> float:
        return float(statistics.median(result[key] for result in results[label]))

    anchor = median("unconstrained", "decode_tokens_per_s")
    anchor_sampler = median("unconstrained", "sampler_ms_per_token")
    step_ms = 1e3 / anchor
    print(
        f"\nQwen2.5-0.5B-shaped Q4_K_M (random weights), greedy, {args.tokens} tokens, "
        f"threads={args.threads}, medians of {args.repetitions}"
    )
    header = (
        f"{'case':42} {'decode tok/s':>12} {'sampler ms/token':>17} {'÷ unconstrained':>16} "
        f"{'from sampler time':>18}"
    )
    print(header)
    print("-" * len(header))
    summary = {}
    for label, *_ in CASES:
        rate = median(label, "decode_tokens_per_s")
        sampler_ms = median(label, "sampler_ms_per_token")
        # The same ratio from the sampler's extra time alone: steadier on a busy machine.
        estimate = step_ms / (step_ms + sampler_ms - anchor_sampler)
        summary[label] = {
            "decode_tokens_per_s": rate,
            "sampler_ms_per_token": sampler_ms,
            "ratio": rate / anchor,
            "ratio_from_sampler_time": estimate,
        }
        print(f"{label:42} {rate:12.1f} {sampler_ms:17.3f} {rate / anchor:16.2f} {estimate:18.2f}")
    ratio = summary["json schema, checked after the pick"]["ratio"]
    verdict = "met" if ratio >= 0.9 else "not met"
    print(f"\njson schema ÷ unconstrained: {ratio:.2f} (target ≥ 0.9: {verdict})")
    sample = results["json schema, checked after the pick"][0]["text"]
    print(f"first constrained answer begins: {sample[:100]!r}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (CACHE_DIR / "grammar-sampling-results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
