"""What OpenAI clients use beyond one answer: logprobs, n choices, token and batch inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import LiveServer, OpenAIFactory
from tests.api.helpers import ONCE, STORIES, sse_payloads


@pytest.fixture
def client(live_server: LiveServer, openai_client: OpenAIFactory) -> openai.OpenAI:
    return openai_client(live_server)


def test_chat_logprobs_whole_and_streamed(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {"model": STORIES, "messages": ONCE, "max_tokens": 8, "temperature": 0}
    whole = client.chat.completions.create(**fields, logprobs=True, top_logprobs=3)
    assert whole.choices[0].logprobs is not None and whole.usage is not None
    content = whole.choices[0].logprobs.content
    assert content is not None and len(content) == whole.usage.completion_tokens
    assert "".join(entry.token for entry in content) == whole.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-6)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    streamed = []
    for chunk in client.chat.completions.create(**fields, logprobs=True, stream=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            streamed += chunk.choices[0].logprobs.content
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [
        (e.token, round(e.logprob, 5)) for e in content
    ]


def test_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=STORIES, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs or [])
    assert logprobs.text_offset == sorted(logprobs.text_offset or [])


def test_n_choices_greedy_are_equal_and_sampled_differ(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {"model": STORIES, "messages": ONCE, "max_tokens": 12}
    greedy = client.chat.completions.create(**fields, n=3, temperature=0)
    assert [choice.index for choice in greedy.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in greedy.choices}) == 1
    one = client.chat.completions.create(**fields, temperature=0)
    assert greedy.choices[0].message.content == one.choices[0].message.content
    assert greedy.usage is not None and one.usage is not None
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    sampled = client.chat.completions.create(**fields, n=3, temperature=1.0, seed=7)
    again = client.chat.completions.create(**fields, n=3, temperature=1.0, seed=7)
    texts = [choice.message.content for choice in sampled.choices]
    assert len(set(texts)) > 1
    assert texts == [choice.message.content for choice in again.choices]


def test_n_choices_stream_with_their_indexes(live_server: LiveServer) -> None:
    body = {"model": STORIES, "messages": ONCE, "max_tokens": 6, "n": 2, "stream": True}
    reply = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60)
    texts: dict[int, str] = {}
    finished = set()

    for payload in sse_payloads(reply.text):
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload)["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert set(texts) == {0, 1} and finished == {0, 1}


def test_more_choices_than_slots_is_a_clear_400(live_server: LiveServer) -> None:
    slots = live_server.settings.parallel
    body = {"model": STORIES, "messages": ONCE, "max_tokens": 2, "n": slots + 1}
    reply = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400, reply.text
    assert "slots" in reply.json()["error"]["message"]


def test_completion_prompts_as_token_ids_and_several(client: openai.OpenAI) -> None:
    text = client.completions.create(
        model=STORIES, prompt="Once upon a time", max_tokens=5, temperature=0
    )
    several = client.completions.create(
        model=STORIES, prompt=["Once upon a time", "Lily had a dog"], max_tokens=5, temperature=0
    )
    assert [choice.index for choice in several.choices] == [0, 1]
    assert several.choices[0].text == text.choices[0].text
    ids = client.completions.create(model=STORIES, prompt=[1, 403, 410], max_tokens=3)
    assert ids.choices[0].text is not None
    pairs = client.completions.create(
        model=STORIES, prompt=["Once upon a time"], n=2, max_tokens=4, temperature=0
    )
    assert [choice.index for choice in pairs.choices] == [0, 1]


def test_embeddings_of_token_ids_equal_those_of_their_text(
    live_server: LiveServer, shared_models: Path
) -> None:
    live_server.state.registry.add(
        shared_models / "all-MiniLM-L6-v2-q8_0.gguf", "minilm", compute_sha256=False
    )
    url = live_server.url + "/v1/embeddings"
    engine_ids = [101, 7592, 2088, 102]  # MiniLM's [CLS] hello world [SEP]
    by_ids = httpx.post(url, json={"model": "minilm", "input": [engine_ids]}, timeout=60)
    by_text = httpx.post(url, json={"model": "minilm", "input": "hello world"}, timeout=60)
    assert by_ids.status_code == 200, by_ids.text
    first, second = by_ids.json()["data"][0]["embedding"], by_text.json()["data"][0]["embedding"]
    assert by_ids.json()["usage"]["prompt_tokens"] == 4
    assert math.isclose(sum(a * b for a, b in zip(first, second, strict=True)), 1.0, abs_tol=1e-4)
