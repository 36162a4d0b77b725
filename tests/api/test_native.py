"""Hoshikage's own routes: health, status, sessions (shared with the terminal), presets, metrics."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory
from tests.api.helpers import ONCE, STORIES, stream_json


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory) -> LiveServer:
    return module_server_factory(presets={"pirate": "Answer like a pirate."})


def get(server: LiveServer, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30)


def test_health(server: LiveServer) -> None:
    response = get(server, "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_health_is_503_until_ready(server: LiveServer) -> None:
    server.state.ready = False
    try:
        response = get(server, "/health")
        assert response.status_code == 503 and response.json() == {"status": "starting"}
    finally:
        server.state.ready = True


def test_openapi_describes_the_routes(server: LiveServer) -> None:
    spec = get(server, "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"):
        assert path in spec["paths"]
    for path in ("/health", "/v1/status", "/v1/sessions", "/v1/presets", "/metrics"):
        assert path in spec["paths"]
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["properties"]["temperature"]["anyOf"][0]["maximum"] == 2.0
    assert "messages" in chat["required"]
    assert get(server, "/docs").status_code == 200 and get(server, "/redoc").status_code == 200


def test_status_shows_the_loaded_model(server: LiveServer, openai_client: OpenAIFactory) -> None:
    openai_client(server).chat.completions.create(model=STORIES, messages=ONCE, max_tokens=2)
    status = get(server, "/v1/status").json()
    assert status["status"] == "ok"
    (model,) = status["models"]
    assert model["name"] == STORIES and model["n_ctx"] == 512 and not model["embedding"]
    assert model["estimated_bytes"] > model["size_bytes"] > 0
    assert model["active"] == 0 and model["queued"] == 0
    # Idle now: unloads keep_alive (300 s by default) after its last request.
    assert model["expires_at"] == pytest.approx(time.time() + 300, abs=30)
    assert 0 < model["expires_in_s"] <= 300
    assert status["in_flight"] == 0 and status["queue_depth"] == 0
    assert status["model_loads"] >= 1
    assert status["memory"]["rss_bytes"] > 10 * 2**20
    assert status["memory"]["budget_bytes"] > 0
    assert status["gpus"] is None or all("used_bytes" in gpu for gpu in status["gpus"])


def test_sessions_create_list_get_delete(server: LiveServer) -> None:
    url = server.url + "/v1/sessions"
    created = httpx.post(url, json={"name": "notes", "preset": "pirate", "model": STORIES})
    assert created.status_code == 201
    session = created.json()
    assert session["name"] == "notes" and session["system_prompt"] == "Answer like a pirate."
    assert session["model"] == STORIES and session["message_count"] == 0
    listed = httpx.get(url).json()["data"]
    assert session["id"] in [item["id"] for item in listed]
    assert httpx.get(f"{url}/notes").json()["id"] == session["id"]
    assert httpx.get(f"{url}/{session['id'][:8]}").json()["name"] == "notes"
    assert httpx.get(f"{url}/notes/messages").json()["data"] == []
    deleted = httpx.delete(f"{url}/notes")
    assert deleted.json() == {"id": session["id"], "object": "session.deleted", "deleted": True}
    assert httpx.get(f"{url}/notes").status_code == 404


def test_a_session_turn_that_is_not_a_question_is_sent_as_it_is(server: LiveServer) -> None:
    """A client-sent history ending with the assistant (a prefill to continue) is neither
    doubled nor given memories: the same prompt as without a session."""
    messages = [
        {"role": "system", "content": "Tell a story."},
        {"role": "user", "content": "Once upon a time"},
        {"role": "assistant", "content": "there was a"},
    ]

    def prompt_tokens(**extra: str) -> int:
        body = {"model": STORIES, "messages": messages, "max_tokens": 2, "temperature": 0}
        response = httpx.post(
            server.url + "/v1/chat/completions", json={**body, **extra}, timeout=60
        )
        assert response.status_code == 200, response.text
        tokens: int = response.json()["usage"]["prompt_tokens"]
        return tokens

    assert prompt_tokens(session_id="prefill-session") == prompt_tokens()


def test_a_chat_with_a_session_is_stored_and_continued(
    server: LiveServer, openai_client: OpenAIFactory
) -> None:
    api = openai_client(server)
    first = api.chat.completions.with_raw_response.create(
        model=STORIES,
        messages=ONCE,
        temperature=0,
        max_tokens=12,
        extra_headers={"X-Session-Id": "story"},
    )
    session_id = first.headers["x-session-id"]
    answer = first.parse().choices[0].message.content or ""
    stored = httpx.get(f"{server.url}/v1/sessions/story/messages").json()["data"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Once upon a time"),
        ("assistant", answer),
    ]
    assert stored[1]["completion_tokens"] == 12 and stored[1]["finish_reason"] == "length"
    # Only the new message: the stored history comes first in the prompt.
    second = api.chat.completions.create(
        model=STORIES,
        messages=[{"role": "user", "content": "Lily"}],
        temperature=0,
        max_tokens=4,
        extra_body={"session_id": session_id},
    )
    alone = api.chat.completions.create(
        model=STORIES, messages=[{"role": "user", "content": "Lily"}], max_tokens=4
    )
    assert second.usage is not None and alone.usage is not None
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 10
    messages = httpx.get(f"{server.url}/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == "Lily"


def test_a_streamed_turn_is_stored_before_the_stream_ends(server: LiveServer) -> None:
    body = {"model": STORIES, "messages": ONCE, "max_tokens": 5, "session_id": "streamed"}
    response, events = stream_json(server, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]" and "x-session-id" in response.headers
    stored = httpx.get(f"{server.url}/v1/sessions/streamed/messages").json()["data"]
    assert len(stored) == 2
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert stored[1]["content"] == text


def test_presets(server: LiveServer) -> None:
    presets = {p["name"]: p for p in get(server, "/v1/presets").json()["data"]}
    assert {"default", "translator", "tsundere", "pirate"} <= set(presets)
    assert presets["pirate"]["builtin"] is False
    assert presets["default"]["builtin"] is True and presets["default"]["system_prompt"]


def test_metrics(server: LiveServer, openai_client: OpenAIFactory) -> None:
    def scrape() -> str:
        response = get(server, "/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    def value(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    requests = 'hoshikage_http_requests_total{method="POST",route="/v1/chat/completions"'
    before = scrape()
    openai_client(server).chat.completions.create(model=STORIES, messages=ONCE, max_tokens=3)
    httpx.get(server.url + "/v1/sessions/does-not-exist")
    after = scrape()
    assert value(after, requests) == value(before, requests) + 1
    assert value(after, "hoshikage_completion_tokens_total") >= (
        value(before, "hoshikage_completion_tokens_total") + 3
    )
    assert 'route="/v1/sessions/{reference}",status="404"' in after
    for name in (
        "hoshikage_prompt_tokens_total",
        "hoshikage_time_to_first_token_seconds_bucket",
        "hoshikage_time_per_output_token_seconds_bucket",
        "hoshikage_queue_depth",
        "hoshikage_loaded_models 1.0",
        "hoshikage_requests_in_flight 0.0",
        "hoshikage_model_loads_total",
        "hoshikage_model_unloads_total",
        "hoshikage_process_resident_memory_bytes",
    ):
        assert name in after, name


def test_two_apps_keep_separate_metrics(server: LiveServer, server_factory: ServerFactory) -> None:
    other = server_factory()
    text = httpx.get(other.url + "/metrics", timeout=10).text
    assert 'route="/v1/chat/completions"' not in text
