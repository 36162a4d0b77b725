"""Generation through the real engine: llama.cpp, the engine thread, sampling, stops, windows."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.engine import (
    BackendUnavailableError,
    ChatMessage,
    ContextOverflowError,
    Engine,
    EngineError,
    FinishEvent,
    Generation,
    LoadOptions,
    SamplingParams,
    TokenEvent,
    UnsupportedFormatError,
)
from hoshikage.engine.backend import gpu_devices

PROMPT = "Once upon a time"
# Plain greedy: no repeat penalty, so a shorter run is exactly a prefix of a longer one.
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)
LONG = 400  # stories260K greedy runs 400 tokens from PROMPT without an EOS


def greedy(max_tokens: int, *stop: str) -> SamplingParams:
    return dataclasses.replace(GREEDY, max_tokens=max_tokens, stop=stop)


def collect(generation: Generation) -> tuple[str, FinishEvent, list[str]]:
    """Read a generation to its end: (text, finish, the text of each streamed event)."""
    pieces = []
    for event in generation:
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
    assert generation.finish is not None
    return "".join(pieces), generation.finish, pieces


@pytest.fixture(scope="module")
def story(stories_engine: Engine) -> str:
    """The greedy continuation of PROMPT, LONG tokens of it."""
    text, finish, _ = collect(stories_engine.complete(PROMPT, greedy(LONG)))
    assert finish.finish_reason == "length"
    return text


@pytest.fixture(scope="module")
def tiny_engine(tiny_chat_model: Path) -> Iterator[Engine]:
    # 256: llama.cpp rounds n_ctx up to a multiple of 256 but not n_batch (see the n_batch test)
    with Engine(tiny_chat_model, LoadOptions(n_ctx=256)) as engine:
        yield engine


# --- determinism ---------------------------------------------------------------------------
def test_greedy_tells_the_story_and_repeats_itself(stories_engine: Engine, story: str) -> None:
    first, _, _ = collect(stories_engine.complete(PROMPT, greedy(24)))
    second, _, _ = collect(stories_engine.complete(PROMPT, greedy(24)))
    assert first == second
    assert "Lily" in first
    assert story.startswith(first)


def test_seeded_sampling_is_reproducible(stories_engine: Engine) -> None:
    def sample(seed: int) -> str:
        params = SamplingParams(temperature=1.0, seed=seed, max_tokens=32)
        return collect(stories_engine.complete(PROMPT, params))[0]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


# --- how generation ends -------------------------------------------------------------------
def test_max_tokens_ends_with_length(stories_engine: Engine) -> None:
    text, finish, _ = collect(stories_engine.complete(PROMPT, greedy(7)))
    assert finish.finish_reason == "length"
    assert finish.usage.completion_tokens == 7
    assert finish.usage.prompt_tokens == len(stories_engine.model.tokenize(PROMPT))
    assert text


@pytest.mark.parametrize(
    "stop",
    [
        ".",  # a one-character stop
        "girl named Lily",  # spans several tokens
        "irl",  # ends inside a token: the rest of that token is dropped too
    ],
)
def test_stop_string_ends_generation_without_showing_it(
    stories_engine: Engine, story: str, stop: str
) -> None:
    assert len(stories_engine.model.tokenize(" girl named Lily", add_special=False)) > 2
    generation = stories_engine.complete(PROMPT, greedy(64, "zzz", stop))
    text, finish, pieces = collect(generation)
    assert finish.finish_reason == "stop"
    assert text == story[: story.index(stop)]
    assert stop not in text
    # The stream is append-only: equal to the clean prefix means no piece of the stop leaked.
    assert "".join(pieces) == generation.text == text


def test_false_start_of_a_stop_string_is_released(stories_engine: Engine, story: str) -> None:
    # "little girl" begins like "little boy": "little" is held back, then must come out.
    generation = stories_engine.complete(PROMPT, greedy(12, "little boy"))
    text, finish, pieces = collect(generation)
    assert finish.finish_reason == "length"
    assert "little girl" in text
    assert "".join(pieces) == text
    assert story.startswith(text)


def test_cancel_from_another_thread_mid_generation(stories_engine: Engine, story: str) -> None:
    generation = stories_engine.complete(PROMPT, greedy(LONG))
    pieces: list[str] = []
    for event in generation:
        if isinstance(event, TokenEvent):
            if not pieces:
                canceller = threading.Thread(target=generation.cancel)
                canceller.start()
                canceller.join()
            pieces.append(event.text)
    finish = generation.finish
    assert finish is not None
    assert finish.finish_reason == "cancelled"
    assert 0 < finish.usage.completion_tokens < LONG
    assert story.startswith("".join(pieces))
    # The engine goes on serving, from a cache the cancelled request left consistent.
    text, _, _ = collect(stories_engine.complete(PROMPT, greedy(24)))
    assert story.startswith(text)


def test_cancel_before_start(stories_engine: Engine) -> None:
    running = stories_engine.complete(PROMPT, greedy(LONG))
    next(iter(running))  # the engine thread is busy with this one now
    queued = stories_engine.complete("The cat", greedy(LONG))
    queued.cancel()
    running.cancel()
    _, finish, pieces = collect(queued)
    assert finish.finish_reason == "cancelled"
    assert finish.usage.completion_tokens == 0
    assert finish.usage.prompt_tokens > 0
    assert not "".join(pieces)
    assert running.wait().finish_reason == "cancelled"


def test_closing_the_engine_cancels_what_runs(stories_model: Path) -> None:
    engine = Engine(stories_model, LoadOptions(n_ctx=512))
    generation = engine.complete(PROMPT, greedy(LONG))
    next(iter(generation))
    engine.close()
    assert generation.wait().finish_reason == "cancelled"


# --- measurements --------------------------------------------------------------------------
def test_usage_and_timings_are_sane(stories_engine: Engine) -> None:
    _, finish, _ = collect(stories_engine.complete("The little dog", greedy(16)))
    usage, timings = finish.usage, finish.timings
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == 16
    assert usage.total_tokens == usage.prompt_tokens + 16
    assert timings.prompt_tokens_evaluated == usage.prompt_tokens - usage.cached_prompt_tokens
    assert timings.decode_tokens == 15
    assert timings.time_to_first_token_s > 0
    assert timings.queued_s >= 0
    assert timings.prompt_eval_s >= 0
    assert timings.decode_tokens_per_s > 0
    assert timings.total_s >= timings.time_to_first_token_s


def test_next_chat_turn_reuses_the_cache_and_answers_as_a_fresh_engine(
    stories_engine: Engine, stories_model: Path
) -> None:
    turn = [ChatMessage("user", PROMPT)]
    answer, _, _ = collect(stories_engine.chat(turn, greedy(16)))
    turn += [ChatMessage("assistant", answer), ChatMessage("user", "One day")]
    reused_text, reused, _ = collect(stories_engine.chat(turn, greedy(16)))
    first_prompt = stories_engine.prepare_chat(turn[:1], greedy(16)).tokens
    assert reused.usage.cached_prompt_tokens >= len(first_prompt)
    assert reused.timings.prompt_tokens_evaluated < reused.usage.prompt_tokens
    # Reusing the KV cache must not change the answer: a second engine, alive at the same
    # time, computes the whole prompt from scratch.
    with Engine(stories_model, LoadOptions(n_ctx=512)) as fresh:
        fresh_text, fresh_finish, _ = collect(fresh.chat(turn, greedy(16)))
    assert fresh_finish.usage.cached_prompt_tokens == 0
    assert fresh_finish.usage.prompt_tokens == reused.usage.prompt_tokens
    assert fresh_text == reused_text


def test_async_consumption(stories_engine: Engine, story: str) -> None:
    async def consume() -> tuple[str, FinishEvent | None]:
        generation = stories_engine.complete(PROMPT, greedy(16))
        with pytest.raises(RuntimeError, match="async for"):
            iter(generation).__next__()
        pieces = [event.text async for event in generation if isinstance(event, TokenEvent)]
        return "".join(pieces), generation.finish

    text, finish = asyncio.run(consume())
    assert finish is not None
    assert finish.finish_reason == "length"
    assert story.startswith(text)
    assert text


def test_two_engines_generate_at_once(
    stories_engine: Engine, tiny_engine: Engine, story: str
) -> None:
    stories = stories_engine.complete(PROMPT, greedy(32))
    tiny = tiny_engine.chat([ChatMessage("user", "Hi")], greedy(32))
    assert tiny.wait().usage.completion_tokens > 0
    text, finish, _ = collect(stories)
    assert finish.finish_reason == "length"
    assert story.startswith(text)


# --- chat templates and the context window -------------------------------------------------
def test_chat_renders_the_models_chatml_template(tiny_engine: Engine) -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    prepared = tiny_engine.prepare_chat(messages, greedy(8))
    (im_start,) = tiny_engine.model.tokenize("<|im_start|>", add_special=False)
    (im_end,) = tiny_engine.model.tokenize("<|im_end|>", add_special=False)
    assert prepared.tokens.count(im_start) == 3  # system, user, and the answer's header
    assert prepared.tokens.count(im_end) == 2
    _, finish, _ = collect(tiny_engine.generate(prepared, greedy(8)))
    assert finish.usage.prompt_tokens == len(prepared.tokens)


def test_long_history_drops_the_oldest_turns_but_keeps_the_system_prompt(
    tiny_engine: Engine,
) -> None:
    messages = [ChatMessage("system", "Be brief.")]
    for index in range(12):
        messages.append(ChatMessage("user", f"question {index} about the weather"))
        messages.append(ChatMessage("assistant", f"answer {index}: it is sunny"))
    messages.append(ChatMessage("user", "last question"))
    params = greedy(16)
    prepared = tiny_engine.prepare_chat(messages, params)
    assert prepared.dropped_messages > 0
    assert len(prepared.tokens) <= tiny_engine.n_ctx - 16
    prompt = tiny_engine.model.detokenize(prepared.tokens)
    assert prompt.startswith("system\nBe brief.")
    assert "last question" in prompt
    assert "question 0 " not in prompt
    _, finish, _ = collect(tiny_engine.chat(messages, params))
    assert finish.dropped_messages == prepared.dropped_messages


def test_a_message_too_large_for_the_window_raises(tiny_engine: Engine) -> None:
    huge = [ChatMessage("system", "Be brief."), ChatMessage("user", "x" * 600)]
    with pytest.raises(ContextOverflowError) as caught:
        tiny_engine.chat(huge, greedy(16))
    assert caught.value.n_ctx == tiny_engine.n_ctx == 256
    assert caught.value.n_prompt_tokens > 256 - 16


def test_a_prompt_too_large_for_the_window_raises(stories_engine: Engine) -> None:
    with pytest.raises(ContextOverflowError) as caught:
        stories_engine.complete("the cat sat " * 200, greedy(16))
    assert caught.value.n_ctx == 512
    assert caught.value.n_prompt_tokens > 512 - 16


# --- files that are not (loadable) GGUF models ---------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("model.safetensors", struct.pack("<Q", 2) + b"{}", "safetensors"),
        ("weights.bin", struct.pack("<Q", 64) + b'{"__metadata__": {}}', "safetensors"),
        ("model.pt", b"PK\x03\x04" + bytes(60), "PyTorch checkpoint"),
        ("model.onnx", b"\x08\x07\x12\x07pytorch", "ONNX"),
        ("model.dat", b"these bytes are no model at all", "not a GGUF model"),
        ("old.bin", b"ggjt" + bytes(60), "legacy GGML"),
    ],
)
def test_non_gguf_files_are_refused_by_format(
    tmp_path: Path, name: str, content: bytes, named: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormatError, match=named) as caught:
        Engine(path, LoadOptions(n_ctx=128))
    assert "GGUF" in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        Engine(tmp_path / "nowhere.gguf", LoadOptions(n_ctx=128))
    with pytest.raises(EngineError, match="directory"):
        Engine(tmp_path, LoadOptions(n_ctx=128))


def test_truncated_gguf_is_an_error_not_a_crash(stories_model: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(stories_model.read_bytes()[:1000])
    with pytest.raises(EngineError, match="could not load"):
        Engine(truncated, LoadOptions(n_ctx=128))


# --- hardware options ----------------------------------------------------------------------
@pytest.mark.skipif(
    any(device.backend.lower() == "cuda" for device in gpu_devices()),
    reason="this llama.cpp build has CUDA",
)
def test_missing_gpu_backend_says_how_to_get_it(stories_model: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CMAKE_ARGS"):
        Engine(stories_model, LoadOptions(n_ctx=128, backend="cuda"))


def test_hybrid_needs_a_layer_count(stories_model: Path) -> None:
    with pytest.raises(EngineError, match="gpu_layers") as caught:
        Engine(stories_model, LoadOptions(n_ctx=128, backend="hybrid"))
    assert not isinstance(caught.value, BackendUnavailableError)


@pytest.mark.skipif(bool(gpu_devices()), reason="this llama.cpp build has a GPU backend")
def test_hybrid_without_a_gpu_backend(stories_model: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CMAKE_ARGS"):
        Engine(stories_model, LoadOptions(n_ctx=128, backend="hybrid", gpu_layers=2))


def test_unknown_backend(stories_model: Path) -> None:
    with pytest.raises(EngineError, match="unknown backend"):
        Engine(stories_model, LoadOptions(n_ctx=128, backend="tpu"))


def test_cpu_backend_works(stories_model: Path, story: str) -> None:
    with Engine(stories_model, LoadOptions(n_ctx=256, backend="cpu")) as engine:
        assert engine.info.backend == "cpu"
        assert engine.info.n_gpu_layers == 0
        assert engine.n_ctx == 256
        text, _, _ = collect(engine.complete(PROMPT, greedy(16)))
    assert story.startswith(text)


def test_quantised_kv_cache_needs_flash_attention(stories_model: Path) -> None:
    options = LoadOptions(n_ctx=128, kv_cache_type="q8_0", flash_attn="off")
    with pytest.raises(EngineError, match="flash attention"):
        Engine(stories_model, options)


@pytest.mark.parametrize("options", [{"kv_cache_type": "q9"}, {"flash_attn": "yes"}])
def test_unknown_context_options_are_engine_errors(
    stories_model: Path, options: dict[str, str]
) -> None:
    with pytest.raises(EngineError):
        Engine(stories_model, LoadOptions(n_ctx=128, **options))  # type: ignore[arg-type]


# --- crashes: run in a child process, so that an abort fails one test, not the run ---------
def run_child(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # ggml's abort handler would otherwise attach gdb to print a backtrace (seconds).
        env={**os.environ, "GGML_NO_BACKTRACE": "1"},
    )


def test_small_context_with_a_prompt_longer_than_asked(stories_model: Path) -> None:
    result = run_child(
        f"""
        from pathlib import Path
        from hoshikage.engine import Engine, LoadOptions, SamplingParams
        with Engine(Path({str(stories_model)!r}), LoadOptions(n_ctx=128)) as engine:
            assert engine.n_ctx == 256, engine.n_ctx
            params = SamplingParams(temperature=0, max_tokens=8)
            prompt = "the cat sat on the mat. " * 18
            assert 128 < len(engine.model.tokenize(prompt)) < 256 - 8
            print(engine.complete(prompt, params).wait().finish_reason)
        """
    )
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split()[-1] == "length"


def test_using_a_closed_engine_is_an_error(stories_model: Path) -> None:
    result = run_child(
        f"""
        from pathlib import Path
        from hoshikage.engine import Engine, EngineError, LoadOptions, SamplingParams
        engine = Engine(Path({str(stories_model)!r}), LoadOptions(n_ctx=128))
        engine.close()
        try:
            engine.complete("Once upon a time", SamplingParams(max_tokens=4))
        except EngineError as exc:
            print("refused:", exc)
        """
    )
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    assert "refused" in result.stdout
