"""The OpenAI-compatible API through the official `openai` package, against a live server."""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from hoshikage.engine.model import LlamaModel
from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory
from tests.api.helpers import ONCE, STORIES, stream_json

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory, shared_models: Path) -> LiveServer:
    """stories260K served from the settings, MiniLM registered as an embedding model."""
    live = module_server_factory()
    minilm = shared_models / "all-MiniLM-L6-v2-q8_0.gguf"
    live.state.registry.add(minilm, "minilm", compute_sha256=False)
    return live


@pytest.fixture(scope="module")
def vocab(stories_model: Path) -> Any:
    model = LlamaModel(stories_model, vocab_only=True)
    yield model
    model.close()


@pytest.fixture
def api(server: LiveServer, openai_client: OpenAIFactory) -> openai.OpenAI:
    return openai_client(server)


def chat(api: openai.OpenAI, **options: Any) -> ChatCompletion:
    values: dict[str, Any] = {"model": STORIES, "messages": ONCE, "temperature": 0}
    values.update(options)
    answer: ChatCompletion = api.chat.completions.create(**values)
    return answer


# --- chat -------------------------------------------------------------------------------------
def test_chat_greedy_tells_the_story(api: openai.OpenAI) -> None:
    answer = chat(api, max_tokens=30)
    choice = answer.choices[0]
    assert "Lily" in (choice.message.content or "")
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    assert answer.model == STORIES
    assert answer.usage is not None and answer.usage.completion_tokens == 30
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 30


def test_chat_response_validates_against_the_openai_type(server: LiveServer) -> None:
    body = {"model": STORIES, "messages": ONCE, "temperature": 0, "max_tokens": 8}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200
    assert response.headers["x-hoshikage-dropped-messages"] == "0"
    parsed = ChatCompletion.model_validate(response.json())
    assert parsed.object == "chat.completion"
    assert response.json()["usage"]["dropped_messages"] == 0


def test_streaming_with_usage(api: openai.OpenAI) -> None:
    whole = chat(api, max_tokens=20).choices[0].message.content
    stream = api.chat.completions.create(
        model=STORIES,
        messages=ONCE,
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 20
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_stream_is_sse_ending_with_done(server: LiveServer) -> None:
    body = {
        "model": STORIES,
        "messages": ONCE,
        "temperature": 0,
        "max_tokens": 6,
        "stream_options": {"include_usage": True},
    }
    response, events = stream_json(server, "/v1/chat/completions", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        ChatCompletionChunk.model_validate(event)
    assert events[-2]["usage"]["total_tokens"] > 0


def test_stop_strings_end_the_answer_unseen(api: openai.OpenAI) -> None:
    answer = chat(api, max_tokens=40, stop=["Lily", "never"])
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    assert "Lily" not in (choice.message.content or "")
    assert (choice.message.content or "").endswith("named ")


def test_max_completion_tokens_wins_and_gives_length(api: openai.OpenAI) -> None:
    answer = chat(api, max_tokens=30, max_completion_tokens=5)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5


def test_seed_reproduces_a_sampled_answer(api: openai.OpenAI) -> None:
    def sampled(seed: int) -> str:
        answer = chat(api, temperature=1.0, seed=seed, max_tokens=24)
        return answer.choices[0].message.content or ""

    assert sampled(7) == sampled(7)
    assert len({sampled(seed) for seed in (1, 2, 3, 4)}) > 1


def test_json_object_answer_is_json(api: openai.OpenAI) -> None:
    free = chat(api, max_tokens=12, response_format={"type": "json_object"})
    assert (free.choices[0].message.content or "").lstrip().startswith("{")
    # The story model never closes an object by itself; a nudge towards "}" (token 128)
    # lets it finish, and the grammar makes what it writes a JSON object.
    nudged = chat(
        api, max_tokens=40, response_format={"type": "json_object"}, logit_bias={"128": 10}
    )
    assert nudged.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(nudged.choices[0].message.content or ""), dict)


def test_json_schema_answer_fits_the_schema(api: openai.OpenAI) -> None:
    answer = chat(
        api,
        messages=[{"role": "user", "content": "Lily"}],
        temperature=0.7,
        seed=2,
        max_tokens=80,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop"
    document = json.loads(answer.choices[0].message.content or "")
    assert set(document) == {"name", "age"}
    assert isinstance(document["name"], str) and len(document["name"]) <= 12
    assert isinstance(document["age"], int)


def test_logit_bias_bans_a_token(vocab: LlamaModel, api: openai.OpenAI) -> None:
    lily = vocab.tokenize(" Lily", add_special=False)[-1]
    assert vocab.token_bytes(lily) == b" Lily"
    answer = chat(api, max_tokens=30, logit_bias={str(lily): -100})
    text = answer.choices[0].message.content or ""
    assert "Lily" not in text
    assert text.startswith(", there was a little girl named")


def test_content_as_text_parts_and_developer_role(api: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "Once upon"}, {"type": "text", "text": "a time"}]
    answer = chat(
        api,
        messages=[
            {"role": "developer", "content": "Tell a story."},
            {"role": "user", "content": parts},
        ],
        max_tokens=5,
    )
    assert answer.usage is not None and answer.usage.prompt_tokens > 5


def test_unknown_fields_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture, api: openai.OpenAI
) -> None:
    with caplog.at_level("WARNING", logger="hoshikage.api.openai"):
        answer = chat(api, max_tokens=3, extra_body={"frobnicate": True})
    assert answer.choices[0].message.content
    assert "frobnicate" in caplog.text


# --- completions ------------------------------------------------------------------------------
def test_completion_continues_the_prompt(server: LiveServer, api: openai.OpenAI) -> None:
    answer = api.completions.create(
        model=STORIES, prompt="Once upon a time", temperature=0, max_tokens=20
    )
    assert "Lily" in answer.choices[0].text
    assert answer.choices[0].finish_reason == "length"
    raw = httpx.post(
        server.url + "/v1/completions",
        json={"model": STORIES, "prompt": ["Once upon a time"], "temperature": 0, "max_tokens": 4},
        timeout=60,
    )
    Completion.model_validate(raw.json())


def test_completion_stream_and_echo(server: LiveServer, api: openai.OpenAI) -> None:
    whole = api.completions.create(
        model=STORIES, prompt="Once upon a time", temperature=0, max_tokens=12, echo=True
    )
    assert whole.choices[0].text.startswith("Once upon a time, there")
    stream = api.completions.create(
        model=STORIES,
        prompt="Once upon a time",
        temperature=0,
        max_tokens=12,
        echo=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    _, events = stream_json(
        server, "/v1/completions", {"model": STORIES, "prompt": "Once", "max_tokens": 3}
    )
    assert events[-1] == "[DONE]"
    # Chunks before the last carry finish_reason null, as OpenAI's own stream does (the
    # package's type describes whole completions); the finishing chunk validates as is.
    finishing = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finishing) == 1
    Completion.model_validate(finishing[0])
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-2])


# --- embeddings -------------------------------------------------------------------------------
def test_embeddings_are_meaningful(api: openai.OpenAI) -> None:
    texts = [
        "My cat is called Tama.",
        "What is the name of my cat?",
        "The stock market fell today.",
    ]
    result = api.embeddings.create(model="minilm", input=texts)
    vectors = [item.embedding for item in sorted(result.data, key=lambda item: item.index)]
    assert [len(v) for v in vectors] == [384, 384, 384]

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.hypot(*a) * math.hypot(*b))

    assert cosine(vectors[0], vectors[1]) == pytest.approx(0.73, abs=0.02)
    assert cosine(vectors[0], vectors[2]) == pytest.approx(0.01, abs=0.05)
    assert result.usage.prompt_tokens > 10


def test_embedding_formats_validate(server: LiveServer) -> None:
    url = server.url + "/v1/embeddings"
    floats = httpx.post(url, json={"model": "minilm", "input": "hello"}, timeout=60).json()
    CreateEmbeddingResponse.model_validate(floats)
    encoded = httpx.post(
        url, json={"model": "minilm", "input": ["hello"], "encoding_format": "base64"}, timeout=60
    ).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
    same = httpx.post(
        url, json={"model": "minilm", "input": "hello", "dimensions": 384}, timeout=60
    )
    assert same.status_code == 200


# --- models and errors ------------------------------------------------------------------------
def test_models_list_and_retrieve(server: LiveServer, api: openai.OpenAI) -> None:
    api = api
    ids = [model.id for model in api.models.list()]
    assert STORIES in ids and "minilm" in ids
    minilm = api.models.retrieve("minilm")
    assert minilm.id == "minilm" and minilm.object == "model"
    raw = httpx.get(server.url + "/v1/models/minilm:latest", timeout=10).json()
    Model.model_validate(raw)
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("no-such-model")


def test_errors_are_the_packages_own_exceptions(api: openai.OpenAI) -> None:
    api = api
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="no-such-model", messages=ONCE)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as hot:
        api.chat.completions.create(model=STORIES, messages=ONCE, temperature=5)
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        api.chat.completions.create(model="minilm", messages=ONCE)
    with pytest.raises(openai.BadRequestError, match="text generation model"):
        api.embeddings.create(model=STORIES, input="hello")
    with pytest.raises(openai.BadRequestError, match="slots"):
        api.chat.completions.create(model=STORIES, messages=ONCE, n=9)
