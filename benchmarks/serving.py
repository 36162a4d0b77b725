"""Serving: Hoshikage's HTTP server against llama-server and llama-cpp-python's server, same run.

    .venv/bin/python -m benchmarks.serving [--quick] [--threads N]

Everything runs on the random-weight Qwen2.5-0.5B-shaped Q4_K_M model (see models.py), with
threads = cores, temperature 0 and end-of-generation banned, so that every request streams
exactly the tokens it asks for. Anchors, all started by this command:

- llama.cpp's `llama-bench` (pp128, tg64) and `llama-server -np N -c N*ctx`, built from the
  llama.cpp inside llama-cpp-python's sdist (llama_build.py; cached in .bench-cache/);
- llama-cpp-python's own server (`python -m llama_cpp.server --interrupt_requests False`).

Measures, through each server's OpenAI `/v1/chat/completions` streaming endpoint:

1. one stream: decode rate = (tokens after the first) / (time after the first), and time to
   first token (TTFT);
2. 4 and 8 concurrent streams released together: aggregate tokens/s (all tokens / time from
   the first request sent to the last token received) and the worst TTFT; llama-server and
   Hoshikage run with as many slots as streams;
3. multi-turn: 4 sessions take turns; each turn sends the session's whole history plus a new
   ~30-word user message and streams the reply, which joins the history, which grows to about
   1,500 tokens by turn 8; TTFT of the last turn / TTFT of the first;
4. memory: Hoshikage's server RSS with the model loaded, after the runs, against model file +
   KV cache (all slots) + 300 MB.

Each server is a subprocess on a free 127.0.0.1 port, waited for through its health endpoint
and always stopped at the end. The table and every figure go to stdout and to
.bench-cache/serving-results.json; server logs to .bench-cache/serving-logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.llama_build import LlamaBinaries, build_llama_tools
from benchmarks.models import CACHE_DIR, LLAMA_CPP_AMX_GUARD, PROJECT_ROOT, qwen_shaped_model
from hoshikage.models.gguf_info import read_gguf_info

log = logging.getLogger("benchmarks.serving")

HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 600.0  # model load, and Hoshikage's one-off AMX probe
STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=600.0)
PHASE_TIMEOUT_S = 1800.0  # no phase may run longer than this, whatever the servers do
MEMORY_MARGIN_BYTES = 300_000_000  # the "+ 300 MB"
RESULTS_FILE = CACHE_DIR / "serving-results.json"
LOG_DIR = CACHE_DIR / "serving-logs"
LCP_DEPS_DIR = CACHE_DIR / "llama-cpp-python-server-deps"
# llama-cpp-python's `[server]` extra, less what Hoshikage's environment already has; installed
# without dependencies into a folder of their own so that nothing in the venv changes.
LCP_SERVER_DEPS = ("sse-starlette>=1.6.1", "starlette-context>=0.3.6,<0.4")

HOSHIKAGE = "hoshikage"
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_BENCH = "llama-bench"
COLUMNS = (HOSHIKAGE, LLAMA_SERVER, LLAMA_CPP_PYTHON, LLAMA_BENCH)

# Runs llama-cpp-python's server with the same AMX guard as Hoshikage and engine_speed.py's
# anchor: where AMX crashes, no extra CPU buffer types (or the first request would kill it).
LCP_SERVER_SCRIPT = (
    "import runpy, sys\n"
    + LLAMA_CPP_AMX_GUARD
    + """
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
)

# Prints the model's end-of-generation token ids (llama-cpp-python's server has no ignore_eos:
# they are banned through logit_bias instead). Vocabulary only: no weights, no compute.
EOG_SCRIPT = r"""
import json, sys
import llama_cpp

quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)  # kept: C holds it
llama_cpp.llama_log_set(quiet, None)
params = llama_cpp.llama_model_default_params()
params.vocab_only = True
model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), params)
vocab = llama_cpp.llama_model_get_vocab(model)
n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
print(json.dumps([t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]))
llama_cpp.llama_model_free(model)
"""

_WORD_TEXT = (
    "the river town market evening lantern bridge garden morning harbor window mountain "
    "story travel winter summer letter friend teacher music painting library forest road "
    "bread coffee candle clock moon star cloud rain wind stone field village history "
    "question answer reason simple quiet bright gentle careful ancient modern small large "
    "north south east west first second third early late slowly quickly together alone "
    "remember explain describe imagine consider compare gather follow return wonder"
)
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Plan:
    threads: int
    quick: bool
    n_ctx: int = 2048  # per slot: the multi-turn history (~1,500 tokens) and its answer fit
    gen_tokens: int = 64
    single_reps: int = 3
    concurrency: tuple[int, ...] = (4, 8)
    rounds: int = 2
    sessions: int = 4
    turns: int = 8
    turn_user_words: int = 30
    turn_reply_tokens: int = 150  # with ~30-word messages: ~1,500 tokens of history at turn 8
    opening_words: int = 150
    bench_reps: int = 3

    @staticmethod
    def make(threads: int, quick: bool) -> Plan:
        if not quick:
            return Plan(threads=threads, quick=False)
        return Plan(
            threads=threads,
            quick=True,
            single_reps=1,
            rounds=1,
            turns=3,
            turn_reply_tokens=64,
            bench_reps=1,
        )


# --- servers ---------------------------------------------------------------------------------
@dataclass
class ServerSpec:
    kind: str  # one of COLUMNS
    label: str  # "llama-server -np 4"
    command: list[str]
    port: int
    health_path: str
    model: str  # the "model" field of requests
    extra_body: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def server_log_path(label: str, log_dir: Path = LOG_DIR) -> Path:
    """Where `running` writes the output of the server labelled `label`."""
    return log_dir / (re.sub(r"[^A-Za-z0-9.-]+", "_", label) + ".log")


@contextmanager
def running(spec: ServerSpec, log_dir: Path = LOG_DIR) -> Iterator[subprocess.Popen[bytes]]:
    """Start the server, wait until its health endpoint answers 200, always stop it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = server_log_path(spec.label, log_dir)
    log.info("starting %s on port %d (log: %s)", spec.label, spec.port, log_path)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            spec.command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env={**os.environ, **spec.env},
            start_new_session=True,  # a terminal's Ctrl+C reaches us, and we stop it
        )
        try:
            _wait_healthy(spec, process, log_path)
            yield process
        finally:
            _stop(process, spec.label)


def _wait_healthy(spec: ServerSpec, process: subprocess.Popen[bytes], log_path: Path) -> None:
    started = time.monotonic()
    deadline = started + HEALTH_TIMEOUT_S
    url = spec.base_url + spec.health_path
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{spec.label} exited with status {process.returncode} before it was ready:\n"
                + _log_tail(log_path)
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                log.info("%s ready in %.1f s", spec.label, time.monotonic() - started)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"{spec.label} not ready after {HEALTH_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes], label: str) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", label, STOP_TIMEOUT_S)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    log.info("stopped %s", label)


def rss_bytes(process: subprocess.Popen[bytes]) -> int:
    return int(psutil.Process(process.pid).memory_info().rss)


def llama_server_spec(binaries: LlamaBinaries, model: Path, plan: Plan, slots: int) -> ServerSpec:
    port = free_port()
    command = [
        str(binaries.server), "-m", str(model), "--host", HOST, "--port", str(port),
        "-t", str(plan.threads), "-tb", str(plan.threads),
        "-np", str(slots), "-c", str(slots * plan.n_ctx),
    ]  # fmt: skip
    return ServerSpec(
        kind=LLAMA_SERVER,
        label=f"llama-server -np {slots}",
        command=command,
        port=port,
        health_path="/health",
        model=model.stem,
        # cache_prompt is llama-server's default; said here since multi-turn relies on it.
        extra_body={"ignore_eos": True, "cache_prompt": True},
    )


def llama_cpp_python_spec(model: Path, plan: Plan, eog: Sequence[int]) -> ServerSpec:
    port = free_port()
    command = [
        sys.executable, "-c", LCP_SERVER_SCRIPT, "--model", str(model),
        "--host", HOST, "--port", str(port),
        "--n_threads", str(plan.threads), "--n_threads_batch", str(plan.threads),
        "--n_ctx", str(plan.n_ctx), "--n_batch", "512",
        "--interrupt_requests", "False",
        # The server's default (True) computes logits for every prompt token, which makes each
        # prefill far slower; False is what a user tuning it would choose: the stronger anchor.
        "--logits_all", "False",
        "--verbose", "False",
    ]  # fmt: skip
    pythonpath = os.pathsep.join(
        part for part in (str(LCP_DEPS_DIR), os.environ.get("PYTHONPATH", "")) if part
    )
    return ServerSpec(
        kind=LLAMA_CPP_PYTHON,
        label="llama-cpp-python server",
        command=command,
        port=port,
        health_path="/v1/models",  # it has no /health; the model is loaded before it listens
        model=model.stem,
        extra_body={"logit_bias": {str(token): -1e9 for token in eog}},
        env={"PYTHONPATH": pythonpath},
    )


def hoshikage_spec(
    model: Path,
    plan: Plan,
    slots: int,
    has_parallel_flag: bool,
    home: Path,
    *,
    keep_alive: str = "-1",
    log_level: str = "warn",
    extra_args: Sequence[str] = (),
) -> ServerSpec:
    port = free_port()
    command = [
        sys.executable, "-m", "hoshikage", "serve", "--host", HOST, "--port", str(port),
        "--model", str(model), "--threads", str(plan.threads), "--n-ctx", str(plan.n_ctx),
        "--backend", "cpu", "--keep-alive", keep_alive, "--log-level", log_level,
        "--shutdown-grace", "1", *extra_args,
    ]  # fmt: skip
    if has_parallel_flag:
        command += ["--parallel", str(slots)]
    config = home / "config.toml"
    config.touch()
    return ServerSpec(
        kind=HOSHIKAGE,
        label=f"hoshikage serve --parallel {slots}",
        command=command,
        port=port,
        health_path="/health",
        model=model.stem,
        extra_body={"ignore_eos": True},
        # Its own data directory and an empty settings file: the user's sessions, registered
        # models and settings stay out of the measurement. HOSHIKAGE_PARALLEL is the
        # `parallel` setting, for a build whose CLI does not list --parallel yet.
        env={
            "HOSHIKAGE_DATA_DIR": str(home / "data"),
            "HOSHIKAGE_CONFIG_FILE": str(config),
            "HOSHIKAGE_PARALLEL": str(slots),
        },
    )


def hoshikage_has_parallel_flag() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "hoshikage", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    ).stdout
    return "--parallel" in help_text


def ensure_llama_cpp_python_server_deps() -> None:
    """llama-cpp-python's server needs its `[server]` extra; install it aside, once."""
    probe = [sys.executable, "-c", "import llama_cpp.server.app"]
    env = {**os.environ, "PYTHONPATH": str(LCP_DEPS_DIR)}
    if subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0:
        return
    log.info("installing llama-cpp-python's server dependencies into %s", LCP_DEPS_DIR)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
        "--target", str(LCP_DEPS_DIR), *LCP_SERVER_DEPS,
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=600)
    result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"llama-cpp-python's server cannot start:\n{result.stderr[-2000:]}")


def end_of_generation_tokens(model: Path) -> list[int]:
    output = subprocess.run(
        [sys.executable, "-c", EOG_SCRIPT, str(model)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    tokens: list[int] = json.loads(output.strip().splitlines()[-1])
    return tokens


# --- the client ------------------------------------------------------------------------------
@dataclass
class Stream:
    """One streamed chat completion, timed on arrival of each content chunk."""

    requested: int
    sent: float
    first: float | None = None
    last: float | None = None
    chunks: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""

    @property
    def tokens(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        # No usage reported (llama-cpp-python): EOS is banned, so "length" means all of them.
        return self.requested if self.finish_reason == "length" else self.chunks

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.sent

    @property
    def decode_rate(self) -> float:
        assert self.first is not None and self.last is not None
        elapsed = self.last - self.first
        return (self.tokens - 1) / elapsed if elapsed > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "ttft_s": self.ttft,
            "tokens": self.tokens,
            "chunks": self.chunks,
            "decode_tok_s": self.decode_rate,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "finish_reason": self.finish_reason,
            "sent": self.sent,
            "last": self.last,
        }


def new_client(connections: int = 1) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits)


async def chat_stream(
    client: httpx.AsyncClient,
    spec: ServerSpec,
    messages: list[dict[str, str]],
    max_tokens: int,
    gate: asyncio.Event | None = None,
) -> Stream:
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **spec.extra_body,
    }
    if gate is not None:
        await gate.wait()
    stream = Stream(requested=max_tokens, sent=time.perf_counter())
    pieces: list[str] = []
    url = spec.base_url + "/v1/chat/completions"
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:800]
            raise RuntimeError(f"{spec.label}: HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, SSE comments and pings
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            now = time.perf_counter()
            chunk = json.loads(payload)
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if stream.first is None:
                        stream.first = now
                    stream.last = now
                    stream.chunks += 1
                    pieces.append(content)
                if choice.get("finish_reason"):
                    stream.finish_reason = choice["finish_reason"]
            _read_usage(stream, chunk)
    stream.text = "".join(pieces)
    if stream.first is None:
        raise RuntimeError(f"{spec.label}: the stream ended without any content")
    return stream


def _read_usage(stream: Stream, chunk: dict[str, Any]) -> None:
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            stream.completion_tokens = usage["completion_tokens"]
        if isinstance(usage.get("prompt_tokens"), int):
            stream.prompt_tokens = usage["prompt_tokens"]
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            stream.cached_tokens = details["cached_tokens"]
    timings = chunk.get("timings")  # llama-server: prompt tokens taken from its cache
    if (
        stream.cached_tokens is None
        and isinstance(timings, dict)
        and isinstance(timings.get("cache_n"), int)
    ):
        stream.cached_tokens = timings["cache_n"]


def words(seed: str, count: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(count))


def user_message(seed: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Request {seed}: {words(seed, 30)}."}]


# --- the measures ----------------------------------------------------------------------------
async def warm_up(spec: ServerSpec) -> None:
    async with new_client() as client:
        await chat_stream(client, spec, user_message("warm-up"), 8)


async def single_stream(spec: ServerSpec, plan: Plan) -> dict[str, Any]:
    async with new_client() as client:
        streams = [
            await chat_stream(client, spec, user_message(f"single-{rep}"), plan.gen_tokens)
            for rep in range(plan.single_reps)
        ]
    return {
        "decode_tok_s": statistics.mean(s.decode_rate for s in streams),
        "ttft_s": statistics.mean(s.ttft for s in streams),
        "streams": [s.summary() for s in streams],
    }


async def concurrent_streams(spec: ServerSpec, plan: Plan, count: int) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    async with new_client(count) as client:
        for round_index in range(plan.rounds):
            gate = asyncio.Event()  # the barrier: every request is built, then all go at once
            tasks = [
                asyncio.create_task(
                    chat_stream(
                        client,
                        spec,
                        user_message(f"concurrent-{count}-{round_index}-{index}"),
                        plan.gen_tokens,
                        gate,
                    )
                )
                for index in range(count)
            ]
            await asyncio.sleep(0)
            gate.set()
            streams = await asyncio.gather(*tasks)
            started = min(s.sent for s in streams)
            ended = max(s.last or s.sent for s in streams)
            total = sum(s.tokens for s in streams)
            rounds.append(
                {
                    "aggregate_tok_s": total / (ended - started),
                    "worst_ttft_s": max(s.ttft for s in streams),
                    "mean_ttft_s": statistics.mean(s.ttft for s in streams),
                    "wall_s": ended - started,
                    "tokens": total,
                    "streams": [s.summary() for s in streams],
                }
            )
    return {
        "aggregate_tok_s": statistics.mean(r["aggregate_tok_s"] for r in rounds),
        "worst_ttft_s": max(r["worst_ttft_s"] for r in rounds),
        "rounds": rounds,
    }


async def multi_turn(spec: ServerSpec, plan: Plan) -> dict[str, Any]:
    histories = [
        [
            {
                "role": "system",
                "content": f"Session {session}. {words(f'opening-{session}', plan.opening_words)}.",
            }
        ]
        for session in range(plan.sessions)
    ]
    ttft: list[list[float]] = []
    prompt_tokens: list[list[int | None]] = []
    cached_tokens: list[list[int | None]] = []
    async with new_client() as client:
        for turn in range(plan.turns):
            ttft.append([])
            prompt_tokens.append([])
            cached_tokens.append([])
            for session, history in enumerate(histories):
                seed = f"turn-{session}-{turn}"
                history.append({"role": "user", "content": f"{words(seed, plan.turn_user_words)}?"})
                stream = await chat_stream(client, spec, history, plan.turn_reply_tokens)
                history.append({"role": "assistant", "content": stream.text})
                ttft[-1].append(stream.ttft)
                prompt_tokens[-1].append(stream.prompt_tokens)
                cached_tokens[-1].append(stream.cached_tokens)
    by_turn = [statistics.mean(values) for values in ttft]
    last_prompts = [n for n in prompt_tokens[-1] if n is not None]
    last_cached = [n for n in cached_tokens[-1] if n is not None]
    return {
        "ttft_by_turn_s": by_turn,
        "last_over_first": by_turn[-1] / by_turn[0],
        "last_turn_prompt_tokens": statistics.mean(last_prompts) if last_prompts else None,
        "last_turn_cached_tokens": statistics.mean(last_cached) if last_cached else None,
        "ttft_s": ttft,
        "prompt_tokens": prompt_tokens,
        "cached_tokens": cached_tokens,
    }


def run_phase(what: str, coroutine: Any) -> Any:
    log.info("  %s", what)
    started = time.perf_counter()
    result = asyncio.run(asyncio.wait_for(coroutine, PHASE_TIMEOUT_S))
    log.info("  %s: %.1f s", what, time.perf_counter() - started)
    return result


def measure_server(
    make_spec: Callable[[int], ServerSpec],
    plan: Plan,
    slot_counts: Sequence[int],
    extra: Callable[[ServerSpec, subprocess.Popen[bytes], dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """All measures on one kind of server: a server per slot count (just one if the
    server has no slots), single stream and multi-turn on the first.

    A measure that fails is recorded under "errors" and the others still run."""
    result: dict[str, Any] = {"concurrent": {}, "errors": {}, "labels": []}

    def phase(what: str, coroutine: Any) -> Any:
        try:
            return run_phase(what, coroutine)
        except Exception as exc:  # the server may be fine for the next measure
            log.error("  %s failed: %s", what, exc)
            result["errors"][what] = f"{type(exc).__name__}: {exc}"
            return None

    for index, slots in enumerate(slot_counts):
        spec = make_spec(slots)
        result["labels"].append(spec.label)
        with running(spec) as process:
            phase(f"{spec.label}: warm-up", warm_up(spec))
            rss = {"after_warm_up_bytes": rss_bytes(process)} if process.poll() is None else {}
            if index == 0:
                result["single"] = phase(f"{spec.label}: single stream", single_stream(spec, plan))
            counts = plan.concurrency if len(slot_counts) == 1 else (slots,)
            for count in counts:
                result["concurrent"][str(count)] = phase(
                    f"{spec.label}: {count} concurrent streams",
                    concurrent_streams(spec, plan, count),
                )
            if index == 0:
                result["multi_turn"] = phase(
                    f"{spec.label}: multi-turn, {plan.sessions} sessions x {plan.turns} turns",
                    multi_turn(spec, plan),
                )
                if process.poll() is None:
                    rss["after_runs_bytes"] = rss_bytes(process)
                result["rss"] = rss
            if extra is not None:
                extra(spec, process, result)
    return result


def llama_bench(binaries: LlamaBinaries, model: Path, plan: Plan) -> dict[str, Any]:
    command = [
        str(binaries.bench), "-m", str(model), "-t", str(plan.threads),
        "-p", "128", "-n", str(plan.gen_tokens), "-r", str(plan.bench_reps), "-o", "json",
    ]  # fmt: skip
    log.info("running llama-bench (pp128, tg%d, %d reps)", plan.gen_tokens, plan.bench_reps)
    output = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"llama-bench failed:\n{output.stderr[-3000:]}")
    entries: list[dict[str, Any]] = json.loads(output.stdout)
    result: dict[str, Any] = {"raw": entries}
    for entry in entries:
        if entry.get("n_gen", 0) > 0 and entry.get("n_prompt", 0) == 0:
            result["tg_tok_s"] = float(entry["avg_ts"])
        elif entry.get("n_prompt", 0) > 0 and entry.get("n_gen", 0) == 0:
            result["pp_tok_s"] = float(entry["avg_ts"])
    return result


def kv_cache_bytes(model: Path, n_ctx: int, slots: int) -> int:
    """f16 K and V for every layer, KV head and position of every slot."""
    info = read_gguf_info(model)
    arch = info.architecture or "llama"

    def number(key: str) -> int:
        value = info.metadata.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int) else 0

    n_layer, n_embd = number("block_count"), number("embedding_length")
    n_head = number("attention.head_count") or 1
    n_head_kv = number("attention.head_count_kv") or n_head
    head_k = number("attention.key_length") or n_embd // n_head
    head_v = number("attention.value_length") or n_embd // n_head
    return slots * n_layer * n_ctx * n_head_kv * (head_k + head_v) * 2


# --- the table -------------------------------------------------------------------------------
@dataclass
class Row:
    measure: str
    values: dict[str, float | None]
    digits: int = 1
    target: str = ""  # "≥ 0.95": applies to the hoshikage column
    verdict: str = ""


def _get(data: dict[str, Any], *path: str) -> float | None:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ratios(values: dict[str, float | None], divisor: str) -> dict[str, float | None]:
    """Each column's value over the divisor column's (left out: its own is 1)."""
    return {k: _ratio(v, values[divisor]) for k, v in values.items() if k != divisor}


def _verdict(value: float | None, op: str, bound: float) -> str:
    if value is None:
        return "n/a"
    met = value >= bound if op == "≥" else value <= bound
    return "met" if met else "NOT MET"


def target_row(measure: str, values: dict[str, float | None], op: str, bound: float) -> Row:
    return Row(
        measure,
        values,
        digits=2,
        target=f"{op} {bound:.2f}",
        verdict=_verdict(values.get(HOSHIKAGE), op, bound),
    )


def build_rows(results: dict[str, Any], plan: Plan) -> list[Row]:
    bench = results.get(LLAMA_BENCH, {})
    servers = {kind: results.get(kind, {}) for kind in (HOSHIKAGE, LLAMA_SERVER, LLAMA_CPP_PYTHON)}

    def per_server(*path: str, scale: float = 1.0) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for kind, data in servers.items():
            value = _get(data, *path)
            values[kind] = None if value is None else value * scale
        return values

    tg, pp = _get(bench, "tg_tok_s"), _get(bench, "pp_tok_s")
    rows = [
        Row(f"llama-bench tg{plan.gen_tokens} tok/s (anchor decode)", {LLAMA_BENCH: tg}),
        Row("llama-bench pp128 tok/s", {LLAMA_BENCH: pp}),
    ]
    single = per_server("single", "decode_tok_s")
    rows.append(Row("1 stream: decode tok/s (after the first)", single))
    rows.append(
        target_row(
            f"  ÷ llama-bench tg{plan.gen_tokens}",
            {kind: _ratio(value, tg) for kind, value in single.items()},
            "≥",
            0.95,
        )
    )
    rows.append(Row("1 stream: TTFT ms", per_server("single", "ttft_s", scale=1e3), digits=0))
    for count in plan.concurrency:
        aggregate = per_server("concurrent", str(count), "aggregate_tok_s")
        worst = per_server("concurrent", str(count), "worst_ttft_s")
        rows.append(Row(f"{count} streams: aggregate tok/s", aggregate))
        rows.append(
            target_row(
                f"  ÷ llama-server -np {count}",
                _ratios(aggregate, LLAMA_SERVER),
                "≥",
                1.0,
            )
        )
        rows.append(
            target_row(
                "  ÷ llama-cpp-python server",
                _ratios(aggregate, LLAMA_CPP_PYTHON),
                "≥",
                1.6,
            )
        )
        rows.append(Row(f"{count} streams: worst TTFT s", worst, digits=2))
        rows.append(
            target_row(
                "  ÷ llama-server's",
                _ratios(worst, LLAMA_SERVER),
                "≤",
                1.2,
            )
        )
    turns = plan.turns
    rows.append(
        Row(
            f"multi-turn: prompt tokens at turn {turns}",
            per_server("multi_turn", "last_turn_prompt_tokens"),
            digits=0,
        )
    )
    rows.append(
        Row(
            "  of which reused from the KV cache",
            per_server("multi_turn", "last_turn_cached_tokens"),
            digits=0,
        )
    )
    for label, index in (("1", 0), (str(turns), -1)):
        values: dict[str, float | None] = {}
        for kind, data in servers.items():
            by_turn = (data.get("multi_turn") or {}).get("ttft_by_turn_s") if data else None
            values[kind] = by_turn[index] * 1e3 if by_turn else None
        rows.append(Row(f"multi-turn: TTFT turn {label} ms", values, digits=0))
    rows.append(
        target_row(
            f"  turn {turns} ÷ turn 1",
            per_server("multi_turn", "last_over_first"),
            "≤",
            1.3,
        )
    )
    loaded = per_server("rss", "after_warm_up_bytes", scale=1 / 2**20)
    rows.append(Row("memory: RSS, model loaded (warmed up) MiB", loaded, digits=0))
    rss = per_server("rss", "after_runs_bytes", scale=1 / 2**20)
    rows.append(Row("memory: RSS after the runs MiB", rss, digits=0))
    budget = _get(results, "memory_budget_bytes")
    rows.append(Row("  model file + KV cache + 300 MB, MiB", {
        HOSHIKAGE: None if budget is None else budget / 2**20}, digits=0))  # fmt: skip
    rss_hk = _get(servers[HOSHIKAGE], "rss", "after_runs_bytes")
    rows.append(target_row("  RSS ÷ that", {HOSHIKAGE: _ratio(rss_hk, budget)}, "≤", 1.0))
    return rows


def format_table(rows: list[Row]) -> str:
    headers = ("measure", *COLUMNS, "target", "verdict")
    widths = [max(len(headers[0]), *(len(row.measure) for row in rows))]
    widths += [max(len(h), 10) for h in headers[1:]]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(
        zip(headers, widths, strict=True)))]  # fmt: skip
    lines.append("-" * len(lines[0]))
    for row in rows:
        cells = [row.measure.ljust(widths[0])]
        for column, width in zip(COLUMNS, widths[1:], strict=False):
            value = row.values.get(column)
            text = "" if column not in row.values else "—" if value is None else (
                f"{value:.{row.digits}f}")  # fmt: skip
            cells.append(text.rjust(width))
        cells.append(row.target.rjust(widths[-2]))
        cells.append(row.verdict.rjust(widths[-1]))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------
def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through `running`, which stops its server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests: a smoke run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=RESULTS_FILE, help="results file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _terminated)  # stop the servers on the way out, as on Ctrl+C
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan = Plan.make(args.threads, args.quick)
    started = time.perf_counter()

    model = qwen_shaped_model()
    binaries = build_llama_tools()
    ensure_llama_cpp_python_server_deps()
    eog = end_of_generation_tokens(model)
    has_parallel = hoshikage_has_parallel_flag()
    notes: list[str] = []
    if not has_parallel:
        notes.append(
            "`hoshikage serve --help` lists no --parallel: slots set through HOSHIKAGE_PARALLEL"
        )
    if binaries.amx_disabled:
        notes.append("AMX crashes on this CPU: llama.cpp tools built with -mno-amx-*; "
                     "Python sides load models without extra buffer types")  # fmt: skip
    results: dict[str, Any] = {
        "plan": asdict(plan),
        "model": {"path": str(model), "size_bytes": model.stat().st_size},
        "llama_cpp_python": binaries.version,
        "llama_build": {"amx_disabled": binaries.amx_disabled, "build_s": binaries.build_s},
        "hoshikage_parallel_flag": has_parallel,
        "errors": {},
    }
    slots0 = plan.concurrency[0]
    results["memory_budget_bytes"] = (
        model.stat().st_size + kv_cache_bytes(model, plan.n_ctx, slots0) + MEMORY_MARGIN_BYTES
    )

    def attempt(kind: str, work: Callable[[], dict[str, Any]]) -> None:
        log.info("== %s", kind)
        try:
            results[kind] = work()
        except Exception as exc:  # one anchor failing must not lose the others' figures
            log.error("%s failed: %s", kind, exc)
            results["errors"][kind] = str(exc)

    attempt(LLAMA_BENCH, lambda: llama_bench(binaries, model, plan))
    attempt(
        LLAMA_SERVER,
        lambda: measure_server(
            lambda n: llama_server_spec(binaries, model, plan, n), plan, plan.concurrency
        ),
    )
    attempt(
        LLAMA_CPP_PYTHON,
        lambda: measure_server(lambda n: llama_cpp_python_spec(model, plan, eog), plan, (1,)),
    )

    def hoshikage_status(
        spec: ServerSpec, process: subprocess.Popen[bytes], out: dict[str, Any]
    ) -> None:
        try:
            out.setdefault("status", {})[spec.label] = httpx.get(
                spec.base_url + "/v1/status", timeout=10.0
            ).json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("no /v1/status from %s: %s", spec.label, exc)

    with tempfile.TemporaryDirectory(prefix="hoshikage-bench-") as home:
        attempt(
            HOSHIKAGE,
            lambda: measure_server(
                lambda n: hoshikage_spec(model, plan, n, has_parallel, Path(home)),
                plan,
                plan.concurrency,
                hoshikage_status,
            ),
        )

    results["elapsed_s"] = time.perf_counter() - started
    for kind in (HOSHIKAGE, LLAMA_SERVER, LLAMA_CPP_PYTHON):
        for what, error in ((results.get(kind) or {}).get("errors") or {}).items():
            results["errors"][what] = error
    rows = build_rows(results, plan)
    results["table"] = [asdict(row) for row in rows]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")

    print(
        f"\nServing benchmark{' (--quick: a smoke run, fewer requests)' if plan.quick else ''}: "
        f"{model.name}, {plan.threads} threads, temperature 0, {plan.gen_tokens} tokens per "
        f"request, {plan.n_ctx} tokens of context per slot; multi-turn: {plan.sessions} "
        f"sessions x {plan.turns} turns, {plan.turn_reply_tokens}-token replies. "
        f"llama-cpp-python {binaries.version}."
    )
    print(format_table(rows))
    for note in notes:
        print(f"note: {note}")
    for what, error in results["errors"].items():
        print(f"error: {what}: {error.splitlines()[0] if error else ''}")
    print(f"({results['elapsed_s']:.0f} s; all figures in {args.json})")
    if results["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (the servers it started are stopped)", file=sys.stderr)
        sys.exit(130)
