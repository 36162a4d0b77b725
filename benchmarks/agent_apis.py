"""Agents' front doors: stateful Responses chains and coding-agent-shaped Anthropic requests.

    .venv/bin/python -m benchmarks.agent_apis [--quick] [--threads N]

On the random-weight Qwen2.5-0.5B-shaped Q4_K_M model (models.py), one slot, temperature 0,
end-of-generation banned, measured from each request's start to its first streamed token:

1. a Responses API conversation of 8 turns: Hoshikage continues with `previous_response_id`
   and is sent only each new input; llama-server's `/v1/responses` is stateless and is sent
   the whole history every turn. Time to first token of turn 8 against turn 1, and
   Hoshikage's turn 8 against llama-server's (target ≤ 0.5×);
2. Anthropic Messages requests shaped like a coding agent's: a system prompt of about 2,000
   tokens that opens with Claude Code's changing billing line, 20 tools, a growing
   conversation; time to first token of the 5th request against the 1st (target ≤ 0.5×).

Figures go to stdout and to .bench-cache/agent-api-results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.llama_build import build_llama_tools
from benchmarks.models import CACHE_DIR, qwen_shaped_model
from benchmarks.serving import (
    Plan,
    ServerSpec,
    hoshikage_has_parallel_flag,
    hoshikage_spec,
    llama_server_spec,
    running,
    words,
)

log = logging.getLogger("benchmarks.agent_apis")

RESULTS_FILE = CACHE_DIR / "agent-api-results.json"
TIMEOUT = httpx.Timeout(600.0)
TURN_WORDS = 30
ANSWER_TOKENS = 48


def _first_token_s(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, str]:
    """Seconds to the first streamed text, and the whole text."""
    started = time.perf_counter()
    first = None
    text: list[str] = []
    with client.stream("POST", url, json={**body, "stream": True}) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status_code}: {reply.read()[:500]!r}")
        for line in reply.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line[5:])
            delta = (
                event.get("delta") if event.get("type") == "response.output_text.delta" else None
            )
            if event.get("type") == "content_block_delta":
                delta = event["delta"].get("text")
            if delta:
                first = first or time.perf_counter()
                text.append(delta)
    if first is None:
        raise RuntimeError(f"{url}: nothing streamed")
    return first - started, "".join(text)


def responses_chain(spec: ServerSpec, turns: int) -> list[float]:
    """A stateless server's chain: every turn is sent the whole history."""
    url = spec.base_url + "/v1/responses"
    history: list[dict[str, Any]] = []
    seconds = []
    with httpx.Client(timeout=TIMEOUT) as client:
        for turn in range(turns):
            message = {
                "type": "message",
                "role": "user",
                "content": words(f"turn {turn}", TURN_WORDS),
            }
            body: dict[str, Any] = {
                "model": spec.model,
                "input": [*history, message],
                "max_output_tokens": ANSWER_TOKENS,
                "temperature": 0,
                **spec.extra_body,
            }
            took, text = _first_token_s(client, url, body)
            seconds.append(took)
            history += [message, {"type": "message", "role": "assistant", "content": text}]
    return seconds


def anthropic_agent(spec: ServerSpec, requests: int) -> list[float]:
    url = spec.base_url + "/v1/messages"
    rules = words("repository rules", 1500)
    tools = [
        {
            "name": f"tool_{index}",
            "description": words(f"tool {index}", 12),
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
                "required": ["path"],
            },
        }
        for index in range(20)
    ]
    messages: list[dict[str, Any]] = []
    seconds = []
    with httpx.Client(timeout=TIMEOUT) as client:
        for index in range(requests):
            billing = f"x-anthropic-billing-header: cc_version=2.1.177.01c; cch={index:05x};"
            messages.append({"role": "user", "content": words(f"task {index}", TURN_WORDS)})
            body = {
                "model": spec.model,
                "max_tokens": ANSWER_TOKENS,
                "system": [{"type": "text", "text": billing}, {"type": "text", "text": rules}],
                "tools": tools,
                "tool_choice": {"type": "none"},
                "messages": messages,
                **spec.extra_body,
            }
            took, text = _first_token_s(client, url, body)
            seconds.append(took)
            messages.append({"role": "assistant", "content": text or "ok"})
    return seconds


def _warm(spec: ServerSpec) -> None:
    body = {"model": spec.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    httpx.post(spec.base_url + "/v1/chat/completions", json=body, timeout=TIMEOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    plan = Plan.make(args.threads, args.quick)
    turns, requests = (4, 3) if args.quick else (8, 5)
    model = qwen_shaped_model()
    binaries = build_llama_tools()
    results: dict[str, Any] = {"threads": plan.threads, "turns": turns, "requests": requests}
    with tempfile.TemporaryDirectory(prefix="hk-bench-agents-") as home:
        ours = hoshikage_spec(model, plan, 1, hoshikage_has_parallel_flag(), Path(home))
        with running(ours):
            _warm(ours)  # Hoshikage loads on the first request; llama-server at start
            results["hoshikage_responses"] = stateful_chain(ours, turns)
            results["hoshikage_anthropic"] = anthropic_agent(ours, requests)
    llama = llama_server_spec(binaries, model, plan, 1)
    llama.command += ["--jinja"]
    with running(llama):
        results["llama_server_responses"] = responses_chain(llama, turns)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2), encoding="utf-8")
    ours_chain, theirs_chain = results["hoshikage_responses"], results["llama_server_responses"]
    agent = results["hoshikage_anthropic"]
    chain_ratio = ours_chain[-1] / theirs_chain[-1]
    agent_ratio = agent[-1] / agent[0]
    print(f"{'measure':58} {'value':>10} {'target':>9}")
    print(
        f"{f'Responses TTFT turn 1 / turn {turns}, Hoshikage (s)':58} "
        f"{ours_chain[0]:.2f}/{ours_chain[-1]:.2f}"
    )
    print(
        f"{f'Responses TTFT turn 1 / turn {turns}, llama-server (s)':58} "
        f"{theirs_chain[0]:.2f}/{theirs_chain[-1]:.2f}"
    )
    print(
        f"{f'turn {turns}: Hoshikage / llama-server':58} {chain_ratio:>9.2f}x {'≤ 0.50x':>9} "
        f"{'met' if chain_ratio <= 0.5 else 'NOT met'}"
    )
    print(f"{f'Anthropic agent TTFT request 1 / {requests} (s)':58} {agent[0]:.2f}/{agent[-1]:.2f}")
    print(
        f"{f'request {requests} / request 1':58} {agent_ratio:>9.2f}x {'≤ 0.50x':>9} "
        f"{'met' if agent_ratio <= 0.5 else 'NOT met'}"
    )
    print(f"\nresults: {RESULTS_FILE}")


def stateful_chain(spec: ServerSpec, turns: int) -> list[float]:
    """Hoshikage's chain: each turn sends only its new input and the previous response's id,
    read from the stream's final event."""
    url = spec.base_url + "/v1/responses"
    previous = None
    seconds = []
    with httpx.Client(timeout=TIMEOUT) as client:
        for turn in range(turns):
            body: dict[str, Any] = {
                "model": spec.model,
                "input": [{"role": "user", "content": words(f"turn {turn}", TURN_WORDS)}],
                "max_output_tokens": ANSWER_TOKENS,
                "temperature": 0,
                "stream": True,
                **spec.extra_body,
            }
            if previous:
                body["previous_response_id"] = previous
            started = time.perf_counter()
            first = None
            with client.stream("POST", url, json=body) as reply:
                for line in reply.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if event.get("type") == "response.output_text.delta" and first is None:
                        first = time.perf_counter()
                    if event.get("type") in ("response.completed", "response.incomplete"):
                        previous = event["response"]["id"]
            if first is None:
                raise RuntimeError(f"turn {turn}: nothing streamed")
            seconds.append(first - started)
    return seconds


if __name__ == "__main__":
    main()
