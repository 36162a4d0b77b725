"""Model lifecycle and admission through the live server: idle unload frees memory, reload on
demand, concurrent streams stay intact, a disconnect frees the engine at once, a full queue is
a 429, a model over the memory budget a 503, and context overflow is never silent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory
from tests.api.helpers import ONCE, STORIES, sse_payloads

LONG = 400  # tokens: a few seconds of decoding for the random model (see random_model)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until condition() held; fails after timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - started


def long_request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "random",
        "messages": ONCE,
        "max_tokens": LONG,
        "ignore_eos": True,
        "temperature": 0,
        **extra,
    }


def is_idle(server: LiveServer) -> bool:
    return server.state.service.in_flight == 0 and all(
        model.active == 0 for model in server.state.manager.status()
    )


# --- keep-alive -------------------------------------------------------------------------------
def test_idle_model_unloads_frees_memory_and_reloads(
    server_factory: ServerFactory, random_model: Path, openai_client: OpenAIFactory
) -> None:
    server = server_factory(model=str(random_model), keep_alive="1s")
    api = openai_client(server)
    before = rss()
    api.chat.completions.create(model="random", messages=ONCE, max_tokens=8, temperature=0)
    answered = time.monotonic()
    loaded = rss()
    (status,) = server.state.manager.status()
    assert status.name == "random"
    assert loaded - before > 30 * 2**20  # the weights are resident now
    # Counted once the engine is closed (status() stops listing it a little before).
    waited = wait_for(lambda: server.state.manager.unloads == 1, timeout=10)
    assert time.monotonic() - answered >= 0.9  # not before its keep-alive ran out
    assert waited < 5
    freed = loaded - rss()
    assert freed > 0.6 * random_model.stat().st_size, f"only {freed / 2**20:.1f} MiB freed"
    assert server.state.manager.status() == []
    # The next request loads it again, transparently.
    again = api.chat.completions.create(model="random", messages=ONCE, max_tokens=4)
    assert again.choices[0].finish_reason in ("length", "stop")
    assert server.state.manager.loads == 2


def test_keep_alive_per_request(live_server: LiveServer, openai_client: OpenAIFactory) -> None:
    api = openai_client(live_server)
    api.chat.completions.create(
        model=STORIES, messages=ONCE, max_tokens=2, extra_body={"keep_alive": -1}
    )
    (status,) = live_server.state.manager.status()
    assert status.expires_at is None  # negative: stays loaded
    api.chat.completions.create(
        model=STORIES, messages=ONCE, max_tokens=2, extra_body={"keep_alive": "0s"}
    )
    wait_for(lambda: live_server.state.manager.status() == [], timeout=5)


# --- concurrency ------------------------------------------------------------------------------
def test_two_concurrent_streams_both_complete_intact(
    live_server: LiveServer, openai_client: OpenAIFactory
) -> None:
    prompts = ["Once upon a time", "One day, a little dog"]
    api = openai_client(live_server)

    def solo(prompt: str) -> str:
        answer = api.chat.completions.create(
            model=STORIES,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=150,
        )
        return answer.choices[0].message.content or ""

    expected = [solo(prompt) for prompt in prompts]
    results: dict[int, tuple[str, str | None, int]] = {}
    start = threading.Barrier(len(prompts))

    def stream(index: int) -> None:
        start.wait()
        chunks = openai_client(live_server).chat.completions.create(
            model=STORIES,
            messages=[{"role": "user", "content": prompts[index]}],
            temperature=0,
            max_tokens=150,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, reason, tokens = "", None, 0
        for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        results[index] = (text, reason, tokens)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for index, text in enumerate(expected):
        got, reason, tokens = results[index]
        assert got == text
        assert reason in ("length", "stop") and tokens > 0
    assert is_idle(live_server)


# --- disconnects ------------------------------------------------------------------------------
@pytest.fixture
def random_server(
    server_factory: ServerFactory, random_model: Path, openai_client: OpenAIFactory
) -> LiveServer:
    server = server_factory(model=str(random_model))
    openai_client(server).chat.completions.create(model="random", messages=ONCE, max_tokens=1)
    return server  # loaded, so timings below measure generation, not loading


def time_to_answer(api: openai.OpenAI) -> float:
    started = time.monotonic()
    answer = api.chat.completions.create(model="random", messages=ONCE, max_tokens=2, temperature=0)
    assert answer.choices[0].message.content is not None
    return time.monotonic() - started


def test_disconnect_mid_stream_frees_the_engine(
    random_server: LiveServer, openai_client: OpenAIFactory
) -> None:
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", random_server.url + "/v1/chat/completions", json=long_request(stream=True)
        ) as response,
    ):
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received >= 5:
                break  # leaving the block closes the connection mid-stream
    freed_in = wait_for(lambda: is_idle(random_server), timeout=2)
    assert freed_in < 0.5
    # Were the 400-token answer still being written, this would wait seconds for it.
    assert time_to_answer(openai_client(random_server)) < 1.0


def test_disconnect_while_waiting_for_a_whole_answer_frees_the_engine(
    random_server: LiveServer, openai_client: OpenAIFactory
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(random_server.url + "/v1/chat/completions", json=long_request(), timeout=0.5)
    wait_for(lambda: is_idle(random_server), timeout=2)
    assert time_to_answer(openai_client(random_server)) < 1.0


# --- admission --------------------------------------------------------------------------------
def test_full_queue_is_429_with_retry_after(
    server_factory: ServerFactory, random_model: Path, openai_client: OpenAIFactory
) -> None:
    server = server_factory(model=str(random_model), max_queue=0, parallel=1)
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", server.url + "/v1/chat/completions", json=long_request(stream=True)
        ) as running,
    ):
        lines = running.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)  # the first request holds the model now
        refused = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "random", "messages": ONCE, "max_tokens": 2},
            timeout=10,
        )
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            openai_client(server).chat.completions.create(model="random", messages=ONCE)
    wait_for(lambda: is_idle(server), timeout=2)
    assert time_to_answer(openai_client(server)) < 2.0  # admitted again once the first is gone


def test_model_over_the_memory_budget_is_503(
    server_factory: ServerFactory, openai_client: OpenAIFactory
) -> None:
    server = server_factory(memory_budget=100_000)
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": STORIES, "messages": ONCE},
        timeout=10,
    )
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "memory_budget" in message and "MiB" in message
    with pytest.raises(openai.InternalServerError):
        openai_client(server).chat.completions.create(model=STORIES, messages=ONCE)
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


# --- context honesty --------------------------------------------------------------------------
def long_history(turns: int = 30) -> list[ChatCompletionMessageParam]:
    story = "Lily and her brother Tom played in the big green park all day long. "
    history: list[ChatCompletionMessageParam] = [{"role": "system", "content": "Tell a story."}]
    for turn in range(turns):
        history.append({"role": "user", "content": f"Part {turn}: {story}"})
        history.append({"role": "assistant", "content": story})
    return [*history, {"role": "user", "content": "The end?"}]


def test_context_overflow_error_policy_is_400_with_the_numbers(
    server_factory: ServerFactory,
    openai_client: OpenAIFactory,
) -> None:
    server = server_factory(context_overflow="error")
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": STORIES, "messages": long_history(), "max_tokens": 16},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["n_ctx"] == 512 and error["n_prompt_tokens"] > 512
    assert f"n_prompt_tokens={error['n_prompt_tokens']}" in error["message"]
    with pytest.raises(openai.BadRequestError):
        openai_client(server).chat.completions.create(
            model=STORIES,
            messages=long_history(),
            max_tokens=16,
        )


def test_context_overflow_drop_policy_says_how_many(
    live_server: LiveServer, openai_client: OpenAIFactory
) -> None:
    messages = long_history()
    raw = openai_client(live_server).chat.completions.with_raw_response.create(
        model=STORIES,
        messages=messages,
        max_tokens=16,
    )
    dropped = int(raw.headers["x-hoshikage-dropped-messages"])
    assert 0 < dropped < len(messages) - 1
    usage = raw.parse().usage
    assert usage is not None and usage.model_extra == {"dropped_messages": dropped}
    assert usage.prompt_tokens + 16 <= 512
    # Streamed: the header comes with the stream, the count with the usage chunk.
    response = httpx.post(
        live_server.url + "/v1/chat/completions",
        json={
            "model": STORIES,
            "messages": messages,
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=30,
    )
    assert int(response.headers["x-hoshikage-dropped-messages"]) == dropped
    assert f'"dropped_messages":{dropped}' in sse_payloads(response.text)[-2]
