"""The Ollama API through the official `ollama` client (and raw HTTP where the wire matters)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import ollama
import pytest

from hoshikage.api.ollama_schemas import OLLAMA_COMPATIBLE_VERSION
from tests.api.conftest import LiveServer, ServerFactory

MODEL = "stories260K"
STORY = [{"role": "user", "content": "Once upon a time"}]
GREEDY = {"temperature": 0, "num_predict": 24}
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=live_server.url, timeout=60) as client:
        yield client


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def loaded_names(client: ollama.Client) -> list[str]:
    return [m.model or "" for m in client.ps().models]


# --- probes ------------------------------------------------------------------------------------
def test_root_answers_like_ollama(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url + "/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert httpx.head(live_server.url + "/").status_code == 200


def test_version(live_server: LiveServer) -> None:
    body = httpx.get(live_server.url + "/api/version").json()
    assert body["version"] == OLLAMA_COMPATIBLE_VERSION
    assert "hoshikage" in body


def test_routes_are_documented(live_server: LiveServer) -> None:
    spec = httpx.get(live_server.url + "/openapi.json").json()
    chat = spec["paths"]["/api/chat"]["post"]
    schema = chat["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "stream", "options", "format", "keep_alive"} <= set(
        schema["properties"]
    )
    for path in ("/api/generate", "/api/tags", "/api/ps", "/api/show", "/api/embed", "/api/pull"):
        assert path in spec["paths"]


# --- chat and generate -------------------------------------------------------------------------
def test_chat_whole_answer(client: ollama.Client) -> None:
    response = client.chat(model=MODEL, messages=STORY, options=GREEDY)
    assert "Lily" in (response.message.content or "")
    assert response.message.role == "assistant"
    assert response.model == MODEL
    assert response.done is True
    assert response.done_reason == "length"
    assert response.eval_count == 24
    assert (response.prompt_eval_count or 0) > 0
    assert all(isinstance(response[key], int) for key in DURATIONS)
    assert (response.total_duration or 0) >= (response.eval_duration or 0) > 0
    assert (response.load_duration or 0) > 0  # the first request loaded the model
    assert datetime.fromisoformat((response.created_at or "").replace("Z", "+00:00"))


def test_chat_stream(client: ollama.Client) -> None:
    parts = list(client.chat(model=MODEL, messages=STORY, options=GREEDY, stream=True))
    assert len(parts) > 2
    assert all(part.done is False for part in parts[:-1])
    final = parts[-1]
    assert final.done is True
    assert final.done_reason == "length"
    assert final.eval_count == 24
    assert final.message.content == ""
    text = "".join(part.message.content or "" for part in parts)
    assert "Lily" in text


def test_stream_is_ndjson_on_the_wire(live_server: LiveServer) -> None:
    body = {"model": MODEL, "messages": STORY, "options": GREEDY}  # stream defaults to true
    with httpx.stream("POST", live_server.url + "/api/chat", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    for line in lines[:-1]:
        assert set(line) == {"model", "created_at", "message", "done"}
        assert line["message"]["role"] == "assistant"
    final = lines[-1]
    assert final["done"] is True
    for key in (*DURATIONS, "prompt_eval_count", "eval_count"):
        assert isinstance(final[key], int), key


def test_two_concurrent_streams_both_complete(live_server: LiveServer) -> None:
    def story() -> list[ollama.ChatResponse]:
        with ollama.Client(host=live_server.url, timeout=60) as client:
            options = {"temperature": 0, "num_predict": 64}
            return list(client.chat(model=MODEL, messages=STORY, options=options, stream=True))

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: story(), range(2))
    for parts in (first, second):
        assert parts[-1].done and parts[-1].eval_count == 64
    texts = ["".join(p.message.content or "" for p in parts) for parts in (first, second)]
    assert texts[0] == texts[1]
    assert "Lily" in texts[0]


def test_stop_string(client: ollama.Client) -> None:
    options = {**GREEDY, "stop": ["Lily"]}
    response = client.chat(model=MODEL, messages=STORY, options=options)
    assert "Lily" not in (response.message.content or "")
    assert response.done_reason == "stop"


def test_generate(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL, prompt="Once upon a time", options=GREEDY)
    assert "Lily" in (whole.response or "")
    assert whole.done and whole.done_reason == "length"
    streamed = list(
        client.generate(model=MODEL, prompt="Once upon a time", options=GREEDY, stream=True)
    )
    assert "".join(part.response or "" for part in streamed) == whole.response
    assert streamed[-1].done and streamed[-1].eval_count == 24
    raw = client.generate(model=MODEL, prompt="Once upon a time", options=GREEDY, raw=True)
    assert "Lily" in (raw.response or "")


def test_format_json_is_enforced(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 8}
    answer = client.generate(model=MODEL, prompt="Once upon a time", format="json", options=options)
    assert (answer.response or "").lstrip().startswith("{")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answer = client.generate(model=MODEL, prompt="Once upon a time", format=schema, options=options)
    assert (answer.response or "").lstrip().startswith("{")


def test_session_is_stored(live_server: LiveServer) -> None:
    headers = {"X-Session-Id": "ollama-story"}
    body = {"model": MODEL, "messages": STORY, "options": GREEDY, "stream": False}
    response = httpx.post(live_server.url + "/api/chat", json=body, headers=headers, timeout=60)
    assert response.status_code == 200
    session_id = response.headers["x-session-id"]
    assert response.json()["session_id"] == session_id
    sessions = live_server.state.sessions
    stored = sessions.messages(sessions.find("ollama-story").id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].content == response.json()["message"]["content"]
    # generate may continue the same session (its prompt is the next user message).
    body = {"model": MODEL, "prompt": "The end.", "options": GREEDY, "stream": False}
    body["session_id"] = "ollama-story"
    response = httpx.post(live_server.url + "/api/generate", json=body, timeout=60)
    assert response.status_code == 200
    assert len(sessions.messages(session_id)) == 4


def test_history_too_long_is_dropped_and_reported(server_factory: ServerFactory) -> None:
    turn = "Lily and Ben went to the park to play with a big red ball. " * 8
    history = [{"role": r, "content": turn} for r in ("user", "assistant") * 4]
    body = {"model": MODEL, "messages": [*history, *STORY], "options": {"num_predict": 8}}
    dropping = server_factory()
    response = httpx.post(dropping.url + "/api/chat", json={**body, "stream": False}, timeout=60)
    assert response.status_code == 200
    dropped = int(response.headers["x-hoshikage-dropped-messages"])
    assert dropped > 0
    assert response.json()["dropped_messages"] == dropped
    refusing = server_factory(context_overflow="error")
    response = httpx.post(refusing.url + "/api/chat", json=body, timeout=60)
    assert response.status_code == 400
    assert "n_ctx=512" in response.json()["error"]


# --- loading and keep_alive --------------------------------------------------------------------
def test_empty_chat_loads_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    assert client.ps().models == []
    loaded = client.chat(model=MODEL, messages=[])
    assert loaded.done and loaded.done_reason == "load"
    assert loaded_names(client) == [f"{MODEL}:latest"]
    running = client.ps().models[0]
    assert running.size and running.size > 0
    assert running.details is not None and running.details.family == "llama"
    assert running.context_length == 512
    assert running.expires_at is not None
    unloaded = client.generate(model=MODEL, prompt="", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert client.ps().models == []


def test_keep_alive_zero_unloads_after_the_answer(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="Once", options=GREEDY, keep_alive="5m")
    assert loaded_names(client) == [f"{MODEL}:latest"]
    client.generate(model=MODEL, prompt="Once", options=GREEDY, keep_alive=0)
    assert wait_until(lambda: client.ps().models == [], timeout=5)


def test_negative_keep_alive_keeps_it_loaded(
    live_server: LiveServer, client: ollama.Client
) -> None:
    client.generate(model=MODEL, prompt="", keep_alive=-1)
    running = client.ps().models[0]
    assert running.expires_at is not None
    assert running.expires_at.year > datetime.now().year + 20  # Ollama's "Forever"


# --- models ------------------------------------------------------------------------------------
@pytest.fixture
def minilm(live_server: LiveServer, shared_models: Path) -> str:
    live_server.state.registry.add(shared_models / "all-MiniLM-L6-v2-q8_0.gguf", "minilm")
    return "minilm"


def test_tags_lists_registered_and_configured_models(
    live_server: LiveServer, minilm: str, client: ollama.Client
) -> None:
    models = {m.model: m for m in client.list().models}
    assert set(models) == {f"{MODEL}:latest", f"{minilm}:latest"}
    stories = models[f"{MODEL}:latest"]
    assert stories.size == Path(live_server.settings.model or "").stat().st_size
    assert stories.details is not None
    assert stories.details.format == "gguf"
    assert stories.details.family == "llama"
    assert stories.details.families == ["llama"]
    assert stories.details.parameter_size
    assert stories.modified_at is not None
    embedder = models[f"{minilm}:latest"]
    assert embedder.details is not None and embedder.details.family == "bert"
    assert embedder.details.quantization_level == "Q8_0"
    assert embedder.digest and len(embedder.digest) == 64


def test_show(client: ollama.Client, minilm: str) -> None:
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] > 0
    assert shown.template
    assert shown.parameters and "temperature" in shown.parameters
    assert shown.modelfile and "FROM " in shown.modelfile
    embedder = client.show(minilm)
    assert embedder.capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("no-such-model")
    assert caught.value.status_code == 404


def test_embed(client: ollama.Client, minilm: str) -> None:
    result = client.embed(model=minilm, input=["a cat sat on the mat", "stock prices fell"])
    assert len(result.embeddings) == 2
    for vector in result.embeddings:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)
    assert (result.prompt_eval_count or 0) > 4
    assert (result.total_duration or 0) > 0
    single = client.embed(model=minilm, input="a cat sat on the mat")
    assert single.embeddings[0] == pytest.approx(result.embeddings[0], abs=1e-5)
    short = client.embed(model=minilm, input="a cat", dimensions=64)
    assert len(short.embeddings[0]) == 64
    assert math.isclose(math.sqrt(sum(x * x for x in short.embeddings[0])), 1.0, rel_tol=1e-3)
    legacy = client.embeddings(model=minilm, prompt="a cat sat on the mat")
    assert list(legacy.embedding) == pytest.approx(result.embeddings[0], abs=1e-5)
    assert client.embed(model=minilm, input=[]).embeddings == []  # only loads it


def test_embed_long_input_is_truncated_unless_refused(client: ollama.Client, minilm: str) -> None:
    long_text = "word " * 2000
    assert len(client.embed(model=minilm, input=long_text).embeddings[0]) == 384
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=minilm, input=long_text, truncate=False)
    assert caught.value.status_code == 400
    assert "context length" in caught.value.error


def test_model_kinds_are_not_mixed(client: ollama.Client, minilm: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=MODEL, input="hello")
    assert caught.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=minilm, messages=STORY)
    assert caught.value.status_code == 400


def test_copy_and_delete(live_server: LiveServer, client: ollama.Client) -> None:
    assert client.copy(MODEL, "my-story").status == "success"  # a configured model: registered
    assert client.copy("my-story", "another-story").status == "success"
    names = {m.model for m in client.list().models}
    assert {"my-story:latest", "another-story:latest"} <= names
    answer = client.generate(model="another-story", prompt="Once upon a time", options=GREEDY)
    assert "Lily" in (answer.response or "")
    assert "another-story:latest" in loaded_names(client)
    assert client.delete("another-story").status == "success"
    assert "another-story:latest" not in loaded_names(client)
    assert "another-story:latest" not in {m.model for m in client.list().models}
    assert Path(live_server.settings.model or "").exists()  # added from elsewhere: kept
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("another-story")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        client.copy("nope", "x")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete(MODEL)  # set in the settings, not registered
    assert caught.value.status_code == 400


# --- errors ------------------------------------------------------------------------------------
def test_client_errors_carry_the_status(client: ollama.Client) -> None:
    cases: list[tuple[int, object]] = [
        (404, lambda: client.chat(model="no-such-model", messages=STORY)),
        (404, lambda: client.generate(model="no-such-model", prompt="hi")),
        (404, lambda: client.chat(model="no-such-model", messages=STORY, stream=True).__next__()),
        (400, lambda: client.chat(model=MODEL, messages=STORY, options={"num_predict": -3})),
        (400, lambda: client.chat(model=MODEL, messages=STORY, options={"temperature": 9})),
        (400, lambda: client.chat(model=MODEL, messages=[{"role": "robot", "content": "hi"}])),
        (400, lambda: client.chat(model=MODEL, messages=STORY, think=True)),
        (400, lambda: client.generate(model=MODEL, prompt="hi", images=[b"\x89PNG"])),
        (400, lambda: client.generate(model=MODEL, prompt="hi", suffix="end")),
    ]
    for status, call in cases:
        with pytest.raises(ollama.ResponseError) as caught:
            assert callable(call)
            call()
        assert caught.value.status_code == status, caught.value.error
        assert caught.value.error


def test_curl_style_body_without_json_content_type(live_server: LiveServer) -> None:
    # `curl -d '{...}'` sends application/x-www-form-urlencoded; Ollama reads JSON anyway.
    body = json.dumps(
        {"model": MODEL, "prompt": "Once upon a time", "stream": False, "options": GREEDY}
    )
    response = httpx.post(
        live_server.url + "/api/generate",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["done"] is True
