"""What the turn pipeline does once for every API: the same accounting, errors and limits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer, ServerFactory
from tests.api.helpers import ONCE, STORIES


def generations(server: LiveServer, reason: str, model: str) -> float:
    """The count of generations of `model` that ended with `reason`, from /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("hoshikage_generations_total{") and (
            f'finish_reason="{reason}"' in line and f'model="{model}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_without_max_tokens_a_prompt_that_fits_is_answered_to_the_windows_end(
    live_server: LiveServer,
) -> None:
    # 512-token window: a ~400-token conversation fits, though not with a 128-token reserve.
    words = "Lily had a red ball and a small dog. " * 28
    body = {"model": STORIES, "messages": [{"role": "user", "content": words}], "temperature": 0}
    reply = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    assert usage["dropped_messages"] == 0
    assert 512 - 128 < usage["prompt_tokens"] < 512
    if reply.json()["choices"][0]["finish_reason"] == "length":
        assert usage["prompt_tokens"] + usage["completion_tokens"] == 512


def test_metrics_count_generations_cancelled_by_a_disconnect(
    server_factory: ServerFactory, random_model: Path
) -> None:
    server = server_factory(model=str(random_model))
    body = {
        "model": "random",
        "messages": ONCE,
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    before = generations(server, "cancelled", "random")
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", server.url + "/v1/chat/completions", json=body) as response,
    ):
        for received, _ in enumerate(response.iter_lines()):
            if received >= 4:
                break
    assert wait_for(lambda: generations(server, "cancelled", "random") == before + 1)


def test_both_apis_count_under_the_same_model_label(live_server: LiveServer) -> None:
    openai = {"model": STORIES, "messages": ONCE, "max_tokens": 2}
    ollama = {"model": STORIES, "messages": ONCE, "stream": False, "options": {"num_predict": 2}}
    httpx.post(live_server.url + "/v1/chat/completions", json=openai, timeout=60)
    first = sum(generations(live_server, r, STORIES) for r in ("stop", "length"))
    httpx.post(live_server.url + "/api/chat", json=ollama, timeout=60)
    second = sum(generations(live_server, r, STORIES) for r in ("stop", "length"))
    assert (first, second) == (1, 2)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "w " * 600}]},
            "messages",
        ),
        ("/v1/completions", {"prompt": [1] * 600}, "prompt"),
    ],
)
def test_context_length_exceeded_names_the_input_at_fault(
    server_factory: ServerFactory, path: str, body: dict[str, object], param: str
) -> None:
    server = server_factory(context_overflow="error")
    reply = httpx.post(
        server.url + path, json={"model": STORIES, "max_tokens": 8, **body}, timeout=60
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", param)


def test_ollama_reports_turns_the_context_builder_dropped(live_server: LiveServer) -> None:
    long_turns = []
    for index in range(12):
        long_turns += [
            {"role": "user", "content": f"Tell me story number {index} about Lily and her dog."},
            {"role": "assistant", "content": "Lily had a dog. " * 12},
        ]
    messages = [*long_turns, {"role": "user", "content": "And now?"}]
    body = {"model": STORIES, "messages": messages, "stream": False, "options": {"num_predict": 4}}
    ollama = httpx.post(live_server.url + "/api/chat", json=body, timeout=60).json()
    openai_body = {"model": STORIES, "messages": messages, "max_tokens": 4}
    openai = httpx.post(live_server.url + "/v1/chat/completions", json=openai_body, timeout=60)
    assert ollama["dropped_messages"] > 0
    assert ollama["dropped_messages"] == openai.json()["usage"]["dropped_messages"]
