"""Regression tests for what a hostile or careless client sent (issue 8), through a live server."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from hoshikage.engine.scheduler import Scheduler
from tests.api.conftest import LiveServer, ServerFactory

MODEL = "stories260K"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Once upon a time"}]}


def _post(server: LiveServer, path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(
        server.url + path,
        content=content,
        json=None if content is not None else body,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def _still_serves(server: LiveServer, **headers: str) -> None:
    ok = _post(server, "/v1/chat/completions", {**CHAT, "max_tokens": 3}, **headers)
    assert ok.status_code == 200, ok.text
    health = httpx.get(server.url + "/health", timeout=10)
    assert health.status_code == 200, health.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "max_tokens": 3, "repeat_last_n": 10**20}),
        ("/api/chat", {**CHAT, "stream": False, "options": {"repeat_last_n": 10**20}}),
        ("/api/chat", {**CHAT, "stream": False, "options": {"stop": ["x"] * 10_000}}),
        ("/v1/chat/completions", {**CHAT, "top_k": 10**20}),
        ("/v1/chat/completions", {**CHAT, "seed": 10**30}),
    ],
)
def test_out_of_range_numbers_are_a_400_and_the_model_goes_on(
    live_server: LiveServer, path: str, body: dict[str, Any]
) -> None:
    response = _post(live_server, path, body)
    assert response.status_code == 400, response.text
    _still_serves(live_server)


def test_whole_context_repeat_window_is_served(live_server: LiveServer) -> None:
    body = {**CHAT, "max_tokens": 3, "repeat_last_n": -1, "repeat_penalty": 1.2}
    assert _post(live_server, "/v1/chat/completions", body).status_code == 200
    options = {"repeat_last_n": -1, "repeat_penalty": 1.2, "num_predict": 3}
    body = {**CHAT, "stream": False, "options": options}
    assert _post(live_server, "/api/chat", body).status_code == 200


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (
            "/v1/chat/completions",
            b'{"model": "stories260K", "messages": [{"role": "user", "content": "\\ud800"}]}',
        ),
        ("/v1/completions", b'{"model": "stories260K", "prompt": "a\\udfffb"}'),
        ("/api/generate", b'{"model": "stories260K", "prompt": "\\ud800", "stream": false}'),
        (
            "/api/chat",
            b'{"model": "stories260K", "messages": [{"role": "user", '
            b'"content": "\\ud800"}], "stream": false}',
        ),
        ("/api/show", b'{"model": "\\ud800"}'),
        ("/api/generate", b'{"model": "stories260K", "prompt": "\xed\xb3\xbf"}'),
        (
            "/v1/chat/completions",
            b'{"model": "stories260K", "messages": [{"role": "user", "content": "\xed\xb3\xbf"}]}',
        ),
    ],
)
def test_invalid_unicode_is_a_400(live_server: LiveServer, path: str, raw: bytes) -> None:
    response = _post(live_server, path, raw)
    assert response.status_code == 400, response.text
    _still_serves(live_server)


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/generate", b"[" * 10_000),
        (
            "/api/generate",
            b'{"model": "stories260K", "prompt": "x", "format": '
            + b'{"items": ' * 1000
            + b"{}"
            + b"}" * 1000
            + b"}",
        ),
        ("/v1/chat/completions", b"[" * 10_000),
    ],
)
def test_deep_nesting_is_a_400(live_server: LiveServer, path: str, raw: bytes) -> None:
    response = _post(live_server, path, raw)
    assert response.status_code == 400, response.text


def test_huge_enum_schema_is_refused(live_server: LiveServer) -> None:
    schema = {"type": "string", "enum": [f"v{i}" for i in range(50_000)]}
    body = {"model": MODEL, "prompt": "x", "stream": False, "format": schema}
    started = time.monotonic()
    response = _post(live_server, "/api/generate", body)
    assert response.status_code == 400, response.text
    assert "too large" in response.json()["error"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("keep_alive", ["1e12", 1e12, "NaN"])
def test_unbounded_keep_alive_is_refused_and_ps_keeps_working(
    live_server: LiveServer, keep_alive: Any
) -> None:
    raw = b'{"model": "stories260K", "prompt": "x", "stream": false, "keep_alive": %s}' % (
        (
            f'"{keep_alive}"'
            if isinstance(keep_alive, str) and keep_alive != "NaN"
            else str(keep_alive)
        ).encode()
    )
    assert _post(live_server, "/api/generate", raw).status_code == 400
    raw_openai = b'{"model": "stories260K", "prompt": "x", "max_tokens": 2, "keep_alive": NaN}'
    assert _post(live_server, "/v1/completions", raw_openai).status_code == 400
    assert httpx.get(live_server.url + "/api/ps", timeout=10).status_code == 200


def test_forever_keep_alive_still_lists_in_ps(live_server: LiveServer) -> None:
    body = {"model": MODEL, "prompt": "x", "stream": False, "keep_alive": -1}
    assert _post(live_server, "/api/generate", {**body, "options": {"num_predict": 2}}).is_success
    listed = httpx.get(live_server.url + "/api/ps", timeout=10).json()["models"]
    assert listed and listed[0]["expires_at"] > "2100"


def test_empty_embed_input_reports_durations(live_server: LiveServer) -> None:
    # The story model is not an embedding model: the route refuses it cleanly either way.
    response = _post(live_server, "/api/embed", {"model": MODEL, "input": ""})
    assert response.status_code < 500


def test_pull_of_an_invalid_repository_name_is_a_400(server_factory: ServerFactory) -> None:
    server = server_factory()
    response = _post(server, "/api/pull", {"model": "a/b..", "stream": False})
    assert response.status_code == 400, response.text


def test_logit_bias_error_names_the_key(live_server: LiveServer) -> None:
    response = _post(live_server, "/v1/chat/completions", {**CHAT, "logit_bias": {"abc": 1}})
    assert response.status_code == 400
    assert "'abc'" in response.json()["error"]["message"]
    assert "!r" not in response.json()["error"]["message"]


# --- keys ---------------------------------------------------------------------------------------
def test_non_ascii_bearer_token_is_a_401(server_factory: ServerFactory) -> None:
    server = server_factory(api_keys=["plain-key"])
    response = httpx.post(
        server.url + "/v1/chat/completions",
        content=b"{}",
        headers=[
            (b"Authorization", "Bearer ключ".encode()),
            (b"Content-Type", b"application/json"),
        ],
        timeout=10,
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_model_management_needs_an_admin_key(server_factory: ServerFactory) -> None:
    server = server_factory(api_keys=["plain-key"], admin_api_keys=["admin-key"])
    plain = {"Authorization": "Bearer plain-key"}
    admin = {"Authorization": "Bearer admin-key"}
    for path, body in (
        ("/api/copy", {"source": MODEL, "destination": "stolen"}),
        ("/api/pull", {"model": "a/b", "stream": False}),
    ):
        refused = _post(server, path, body, **plain)
        assert refused.status_code == 403, refused.text
        assert "admin" in refused.json()["error"]
    deleted = httpx.request(
        "DELETE", server.url + "/api/delete", json={"model": MODEL}, headers=plain, timeout=10
    )
    assert deleted.status_code == 403
    unload = {"model": MODEL, "prompt": "", "keep_alive": 0}
    assert _post(server, "/api/generate", unload, **plain).status_code == 403
    assert _post(server, "/api/generate", unload, **admin).status_code == 200
    copied = _post(server, "/api/copy", {"source": MODEL, "destination": "mine"}, **admin)
    assert copied.status_code == 200, copied.text
    _still_serves(server, **plain)  # plain keys still use the models
    _still_serves(server, **admin)  # and admin keys are keys too


def test_without_keys_management_stays_open(server_factory: ServerFactory) -> None:
    server = server_factory()
    copied = _post(server, "/api/copy", {"source": MODEL, "destination": "mine"})
    assert copied.status_code == 200, copied.text


# --- a dying engine thread ------------------------------------------------------------------------
class _ThreadKiller(BaseException):
    """Not an Exception: the step loop's own error handling lets it through, as a bug would."""


def test_an_engine_whose_thread_dies_is_reported_and_reloaded(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _still_serves(live_server)
    original = Scheduler._step

    def die(self: Scheduler) -> None:
        raise _ThreadKiller("simulated crash")

    monkeypatch.setattr(Scheduler, "_step", die)
    failed = _post(live_server, "/v1/chat/completions", {**CHAT, "max_tokens": 3})
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "engine_unavailable"
    monkeypatch.setattr(Scheduler, "_step", original)
    # The watchdog notices within a second or two, says so, and reloads the model.
    deadline = time.monotonic() + 20
    seen_degraded = False
    while time.monotonic() < deadline:
        status = httpx.get(live_server.url + "/v1/status", timeout=10).json()
        seen_degraded = seen_degraded or status["status"] == "degraded"
        if status["engine_recoveries"] >= 1 and not status["unavailable_models"]:
            break
        time.sleep(0.05)
    assert status["engine_recoveries"] >= 1
    _still_serves(live_server)
