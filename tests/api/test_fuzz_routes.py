"""Generated requests, valid and hostile, to every POST route of a live server: never a 5xx,
always the API's own error shape, and the server still answers afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import LiveServer, ServerFactory

MODEL = "stories260K"
ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/sessions",
    "/v1/memory",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/show",
    "/api/copy",
]
HOSTILE_NUMBERS = st.sampled_from(
    [10**20, -(10**20), 2**31, -1, 0, 1e308, -0.0, 3.5, "NaN", "Infinity", "1e12"]
)
TEXT = st.one_of(st.text(max_size=20), st.sampled_from(["\ud800", "a\udfffb", "", "5m"]))
SCALAR = st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, TEXT)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "seed",
        "max_tokens", "stop", "keep_alive", "logit_bias", "response_format", "format",
        "options", "messages", "prompt", "input", "name", "text", "source", "destination",
        "session_id", "user", "dimensions", "stream", "n", "tools", "tool_choice",
        "system", "thinking", "stop_sequences", "logprobs", "top_logprobs", "instructions",
        "previous_response_id", "max_output_tokens", "store", "text", "reasoning",
    ]
)  # fmt: skip
BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.just(MODEL), TEXT)},
    optional={"messages": st.just([{"role": "user", "content": "Once"}])},
).flatmap(
    lambda base: st.dictionaries(FIELDS, VALUE, max_size=5).map(lambda extra: {**base, **extra})
)


def _encode(body: dict[str, Any]) -> bytes:
    # NaN and Infinity written as JSON literals, as a careless client would.
    text = json.dumps(body).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    return text.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def fuzzed(module_server_factory: ServerFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    server = module_server_factory()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield server, client


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=st.sampled_from(ROUTES), body=BODY)
def test_no_generated_request_earns_a_5xx(
    fuzzed: tuple[LiveServer, httpx.Client], route: str, body: dict[str, Any]
) -> None:
    _, client = fuzzed
    if route.startswith(("/v1/chat", "/v1/completions", "/v1/messages")):
        body = {**body, "max_tokens": 2} if "max_tokens" not in body else body
    if route == "/v1/responses":
        body = {"input": "Once", "max_output_tokens": 2, **body}
    if route in ("/api/chat", "/api/generate"):
        body = {**body, "stream": False, "options": {"num_predict": 2}}
    response = client.post(
        route, content=_encode(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code < 500, (route, body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        if route.startswith("/api/"):
            assert isinstance(error, str) and error
        elif route.startswith("/v1/messages"):  # Anthropic's shape
            assert response.json()["type"] == "error"
            assert isinstance(error, dict) and error["message"] and error["type"]
        else:
            assert isinstance(error, dict) and error["message"]


def test_the_server_still_serves_after_the_fuzzing(
    fuzzed: tuple[LiveServer, httpx.Client],
) -> None:
    _, client = fuzzed
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Once"}], "max_tokens": 3}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    ollama = {"model": MODEL, "prompt": "Once", "stream": False, "options": {"num_predict": 3}}
    assert client.post("/api/generate", json=ollama).status_code == 200
    assert client.get("/health").status_code == 200
