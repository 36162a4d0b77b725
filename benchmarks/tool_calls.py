"""Forced tool calls: what grammar-constrained decoding costs, against llama-server --jinja.

    .venv/bin/python -m benchmarks.tool_calls [--quick] [--threads N]

On the random-weight Qwen2.5-0.5B-shaped Q4_K_M model (models.py), served with Qwen2.5's own
chat template (its tools block and `<tool_call>` format) by both servers, one slot each,
temperature 0, measured through `/v1/chat/completions`:

1. decode rate of Hoshikage's streamed forced tool call (`tool_choice` naming the function,
   whose schema holds a long free string, so that the call runs for all of `max_tokens`)
   against its own unconstrained decode of the same length (end-of-generation banned): the
   grammar's cost per token (target ≥ 0.9×);
2. end-to-end time of the same forced tool-call request, whole (not streamed), Hoshikage
   against llama-server (`--jinja`, which treats a named choice as `required`; with a single
   tool they ask for the same thing): target ≤ 1.0×.

Median of the repetitions; the servers are started and stopped by this command; figures go
to stdout and to .bench-cache/tool-call-results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.llama_build import build_llama_tools
from benchmarks.models import CACHE_DIR, PROJECT_ROOT, qwen_shaped_model
from benchmarks.serving import (
    REQUEST_TIMEOUT,
    Plan,
    ServerSpec,
    hoshikage_has_parallel_flag,
    hoshikage_spec,
    llama_server_spec,
    running,
)

log = logging.getLogger("benchmarks.tool_calls")

RESULTS_FILE = CACHE_DIR / "tool-call-results.json"
TEMPLATE = PROJECT_ROOT / "tests" / "toolformats" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
NOTE = {
    "type": "function",
    "function": {
        "name": "save_note",
        "description": "Save a note for the user",
        "parameters": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
            "required": ["title", "body"],
        },
    },
}
FORCED = {"type": "function", "function": {"name": "save_note"}}
QUESTION = [{"role": "user", "content": "Write a note about the meeting on Tuesday."}]


def _body(spec: ServerSpec, tokens: int, *, tools: bool, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": QUESTION,
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": stream,
    }
    if tools:
        body |= {"tools": [NOTE], "tool_choice": FORCED, "parallel_tool_calls": False}
    else:
        body |= spec.extra_body  # ignore_eos: every token asked for is generated
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def streamed_rate(client: httpx.AsyncClient, spec: ServerSpec, body: dict[str, Any]) -> float:
    """Tokens after the first / time after the first, from a streamed answer."""
    first = last = None
    tokens = 0
    async with client.stream("POST", spec.base_url + "/v1/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"{spec.label}: HTTP {reply.status_code}: {await reply.aread()!r}")
        async for line in reply.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[5:])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls"):
                    first = first or now
                    last = now
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                tokens = int(usage.get("completion_tokens") or 0)
    if first is None or last is None or last <= first or tokens < 2:
        raise RuntimeError(f"{spec.label}: nothing streamed ({tokens} tokens)")
    return (tokens - 1) / (last - first)


async def whole_call(client: httpx.AsyncClient, spec: ServerSpec, tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    reply = await client.post(
        spec.base_url + "/v1/chat/completions", json=_body(spec, tokens, tools=True, stream=False)
    )
    elapsed = time.perf_counter() - started
    if reply.status_code != 200:
        raise RuntimeError(f"{spec.label}: HTTP {reply.status_code}: {reply.text[:800]}")
    data = reply.json()
    message = data["choices"][0]["message"]
    return {
        "seconds": elapsed,
        "completion_tokens": data["usage"]["completion_tokens"],
        "finish_reason": data["choices"][0]["finish_reason"],
        "called": bool(message.get("tool_calls")),
    }


async def measure(spec: ServerSpec, plan: Plan, tokens: int, *, rates: bool) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        await whole_call(client, spec, 8)  # warm: model loaded, template compiled
        calls = [await whole_call(client, spec, tokens) for _ in range(plan.single_reps)]
        result: dict[str, Any] = {
            "end_to_end_s": statistics.median(call["seconds"] for call in calls),
            "calls": calls,
        }
        if rates:
            constrained = [
                await streamed_rate(client, spec, _body(spec, tokens, tools=True, stream=True))
                for _ in range(plan.single_reps)
            ]
            free = [
                await streamed_rate(client, spec, _body(spec, tokens, tools=False, stream=True))
                for _ in range(plan.single_reps)
            ]
            result["forced_call_tok_s"] = statistics.median(constrained)
            result["unconstrained_tok_s"] = statistics.median(free)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer tokens")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    plan = Plan.make(args.threads, args.quick)
    tokens = 48 if args.quick else 128
    model = qwen_shaped_model()
    binaries = build_llama_tools()
    results: dict[str, Any] = {"tokens": tokens, "threads": plan.threads}
    with tempfile.TemporaryDirectory(prefix="hk-bench-tools-") as home:
        hoshikage = hoshikage_spec(
            model,
            plan,
            1,
            hoshikage_has_parallel_flag(),
            Path(home),
            extra_args=("--chat-template", TEMPLATE.read_text(encoding="utf-8")),
        )
        with running(hoshikage):
            results["hoshikage"] = asyncio.run(measure(hoshikage, plan, tokens, rates=True))
    llama = llama_server_spec(binaries, model, plan, 1)
    llama.command += ["--jinja", "--chat-template-file", str(TEMPLATE)]
    llama.label += " --jinja"
    with running(llama):
        results["llama_server"] = asyncio.run(measure(llama, plan, tokens, rates=False))
    ours, theirs = results["hoshikage"], results["llama_server"]
    grammar_ratio = ours["forced_call_tok_s"] / ours["unconstrained_tok_s"]
    end_to_end_ratio = ours["end_to_end_s"] / theirs["end_to_end_s"]
    results["ratios"] = {
        "grammar_decode": grammar_ratio,
        "end_to_end_vs_llama_server": end_to_end_ratio,
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2), encoding="utf-8")
    rows = [
        ("forced call decode (tok/s)", f"{ours['forced_call_tok_s']:.1f}", "", ""),
        ("unconstrained decode (tok/s)", f"{ours['unconstrained_tok_s']:.1f}", "", ""),
        ("forced / unconstrained", f"{grammar_ratio:.2f}x", "≥ 0.90x", _met(grammar_ratio >= 0.9)),
        (
            f"forced call end to end, {tokens} tokens (s)",
            f"{ours['end_to_end_s']:.2f}",
            f"{theirs['end_to_end_s']:.2f}",
            "",
        ),
        (
            "Hoshikage / llama-server",
            f"{end_to_end_ratio:.2f}x",
            "≤ 1.00x",
            _met(end_to_end_ratio <= 1.0),
        ),
    ]
    print(f"{'measure':44} {'hoshikage':>10} {'llama-server / target':>22} {'':>8}")
    for name, value, other, verdict in rows:
        print(f"{name:44} {value:>10} {other:>22} {verdict:>8}")
    print(f"\nresults: {RESULTS_FILE}")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    main()
