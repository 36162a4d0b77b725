"""Bad input to every OpenAI-side and native route: a clear 4xx/5xx in OpenAI's error shape,
never a traceback, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, ServerFactory
from tests.api.helpers import ONCE, STORIES

MAX_BODY = 4096
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture(scope="module")
def server(
    module_server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    stories_model: Path,
    shared_models: Path,
) -> LiveServer:
    """A small body limit, MiniLM registered, and 'broken': a truncated copy of stories260K."""
    broken = tmp_path_factory.mktemp("broken") / "broken.gguf"
    data = stories_model.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    live = module_server_factory(max_request_bytes=MAX_BODY, model_aliases={"broken": str(broken)})
    live.state.registry.add(
        shared_models / "all-MiniLM-L6-v2-q8_0.gguf", "minilm", compute_sha256=False
    )
    live.state.sessions.create(name="taken")
    return live


@dataclass(frozen=True)
class Bad:
    """One bad request and what must come back."""

    name: str
    path: str
    body: Any = None  # JSON to send; bytes are sent as they are
    status: int = 400
    method: str = "POST"
    param: str | None = None
    says: str = ""  # a fragment the message must contain (case-insensitive)
    headers: dict[str, str] = field(default_factory=dict)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": STORIES, "messages": ONCE, "max_tokens": 4, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": STORIES, "prompt": "Once", "max_tokens": 4, **fields}


def embedding(**fields: Any) -> dict[str, Any]:
    return {"model": "minilm", "input": "hello", **fields}


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def called(arguments: str) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


IMAGE = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
BAD_SCHEMA = {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}

TABLE = [
    # --- chat completions
    Bad("malformed json", CHAT, b'{"model": "stories260K", ', says="malformed JSON"),
    Bad("body is a list", CHAT, [1, 2]),
    Bad("no messages field", CHAT, {"model": STORIES}, param="messages"),
    Bad("messages not a list", CHAT, chat(messages="hi"), param="messages"),
    Bad("empty messages", CHAT, chat(messages=[]), param="messages", says="at least 1"),
    Bad(
        "unknown role",
        CHAT,
        chat(messages=[{"role": "wizard", "content": "hi"}]),
        param="messages.0.role",
    ),
    Bad(
        "content wrong type",
        CHAT,
        chat(messages=[{"role": "user", "content": 5}]),
        param="messages.0.content.str",
    ),
    Bad("user content missing", CHAT, chat(messages=[{"role": "user"}]), says="needs content"),
    Bad(
        "image content",
        CHAT,
        chat(messages=[{"role": "user", "content": IMAGE}]),
        says="image input is not supported",
    ),
    Bad(
        "assistant tool call without its function",
        CHAT,
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "1"}]}, *ONCE]),
        param="messages.0.tool_calls.0.function",
    ),
    Bad(
        "tool call arguments not a JSON object",
        CHAT,
        chat(messages=[called("not json"), *ONCE]),
        param="messages[0].tool_calls",
        says="not a JSON object",
    ),
    Bad(
        "tool result answering no call",
        CHAT,
        chat(messages=[*ONCE, {"role": "tool", "tool_call_id": "nobody", "content": "1"}]),
        param="messages[1].tool_call_id",
        says="answers no call",
    ),
    Bad(
        "tool message without tool_call_id",
        CHAT,
        chat(messages=[*ONCE, {"role": "tool", "content": "1"}]),
        says="needs the tool_call_id",
    ),
    Bad("negative max_tokens", CHAT, chat(max_tokens=-5), param="max_tokens"),
    Bad(
        "zero max_completion_tokens",
        CHAT,
        chat(max_completion_tokens=0),
        param="max_completion_tokens",
    ),
    Bad("max_tokens not a number", CHAT, chat(max_tokens="ten"), param="max_tokens"),
    Bad("temperature too high", CHAT, chat(temperature=3), param="temperature"),
    Bad("temperature negative", CHAT, chat(temperature=-0.5), param="temperature"),
    Bad("top_p above 1", CHAT, chat(top_p=1.5), param="top_p"),
    Bad(
        "presence_penalty out of range", CHAT, chat(presence_penalty=2.5), param="presence_penalty"
    ),
    Bad(
        "frequency_penalty out of range",
        CHAT,
        chat(frequency_penalty=-3),
        param="frequency_penalty",
    ),
    Bad("n=0", CHAT, chat(n=0), param="n"),
    Bad("n beyond the slots", CHAT, chat(n=16), says="slots"),
    Bad("n with a session", CHAT, chat(n=2, session_id="s"), param="n", says="session"),
    Bad(
        "tool parameters not an object schema",
        CHAT,
        chat(tools=[tool("f", {"type": "string"})]),
        param="tools[0].function.parameters",
    ),
    Bad(
        "tool parameters not a usable schema",
        CHAT,
        chat(tools=[tool("f", BAD_SCHEMA)]),
        param="tools[0].function.parameters",
    ),
    Bad(
        "tool name with spaces",
        CHAT,
        chat(tools=[tool("get weather", {"type": "object"})]),
        param="tools[0].function.name",
    ),
    Bad(
        "two tools of one name",
        CHAT,
        chat(tools=[tool("f", {"type": "object"}), tool("f", {"type": "object"})]),
        param="tools[1].function.name",
    ),
    Bad(
        "tool_choice required without tools",
        CHAT,
        chat(tool_choice="required"),
        param="tool_choice",
    ),
    Bad(
        "tool_choice naming a function not among the tools",
        CHAT,
        chat(
            tools=[tool("f", {"type": "object"})],
            tool_choice={"type": "function", "function": {"name": "g"}},
        ),
        param="tool_choice",
        says="not among the tools",
    ),
    Bad("tool of another type", CHAT, chat(tools=[{"type": "web_search"}]), param="tools.0.type"),
    Bad("top_logprobs without logprobs", CHAT, chat(top_logprobs=3), says="needs logprobs"),
    Bad("top_logprobs above 20", CHAT, chat(logprobs=True, top_logprobs=21), param="top_logprobs"),
    Bad("audio output", CHAT, chat(modalities=["text", "audio"]), param="modalities"),
    Bad("logit_bias key not a token id", CHAT, chat(logit_bias={"abc": 1}), param="logit_bias"),
    Bad("logit_bias value out of range", CHAT, chat(logit_bias={"5": 500}), param="logit_bias"),
    Bad("too many stop strings", CHAT, chat(stop=[str(i) for i in range(20)]), param="stop"),
    Bad(
        "response_format unknown type",
        CHAT,
        chat(response_format={"type": "xml"}),
        param="response_format.type",
    ),
    Bad(
        "json_schema without schema object",
        CHAT,
        chat(response_format={"type": "json_schema"}),
        param="response_format",
    ),
    Bad(
        "unusable json schema",
        CHAT,
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": BAD_SCHEMA},
            }
        ),
        param="response_format.json_schema.schema",
    ),
    Bad(
        "unknown stream option",
        CHAT,
        chat(stream=True, stream_options={"bogus": 1}),
        param="stream_options.bogus",
    ),
    Bad(
        "bad keep_alive",
        CHAT,
        chat(keep_alive="5 parsecs"),
        param="keep_alive",
        says="not a duration",
    ),
    Bad("unknown model", CHAT, chat(model="no-such-model"), status=404, param="model"),
    Bad("a path as the model", CHAT, chat(model="/etc/passwd"), status=404, param="model"),
    Bad("embedding model", CHAT, chat(model="minilm"), param="model", says="embedding model"),
    Bad(
        "model that fails to load", CHAT, chat(model="broken"), status=500, says="cannot load model"
    ),
    Bad("streamed, model that fails to load", CHAT, chat(model="broken", stream=True), status=500),
    Bad("max_tokens beyond the context", CHAT, chat(max_tokens=100_000), says="n_ctx=512"),
    Bad(
        "body too large",
        CHAT,
        chat(messages=[{"role": "user", "content": "x" * MAX_BODY}]),
        status=413,
    ),
    # --- completions
    Bad(
        "token id outside the vocabulary",
        COMPLETIONS,
        completion(prompt=[1, 2, 10_000_000]),
        says="outside the vocabulary",
    ),
    Bad("seventeen prompts", COMPLETIONS, completion(prompt=["a"] * 17), param="prompt"),
    Bad("empty token prompt", COMPLETIONS, completion(prompt=[[1], []]), param="prompt"),
    Bad(
        "echo of a token prompt",
        COMPLETIONS,
        completion(prompt=[1, 2], echo=True),
        param="echo",
    ),
    Bad(
        "prompt longer than the context",
        COMPLETIONS,
        completion(prompt=[1] * 600),
        param="prompt",
        says="context window",
    ),
    Bad("empty prompt list", COMPLETIONS, completion(prompt=[]), param="prompt"),
    Bad("no prompt", COMPLETIONS, {"model": STORIES}, param="prompt"),
    Bad("suffix", COMPLETIONS, completion(suffix="end"), param="suffix"),
    Bad("best_of", COMPLETIONS, completion(best_of=3), param="best_of"),
    Bad("completion logprobs above 20", COMPLETIONS, completion(logprobs=21), param="logprobs"),
    Bad(
        "completion negative max_tokens", COMPLETIONS, completion(max_tokens=-1), param="max_tokens"
    ),
    Bad("completion malformed json", COMPLETIONS, b"{nope}", says="malformed JSON"),
    Bad("completion of an embedding model", COMPLETIONS, completion(model="minilm"), param="model"),
    # --- embeddings
    Bad("negative token id input", EMBEDDINGS, embedding(input=[[1, -2]]), param="input"),
    Bad(
        "input longer than the window",
        EMBEDDINGS,
        embedding(input=[[101] * 600]),
        param="input",
        says="window",
    ),
    Bad("empty input list", EMBEDDINGS, embedding(input=[]), param="input"),
    Bad("empty input string", EMBEDDINGS, embedding(input=""), param="input"),
    Bad("no input", EMBEDDINGS, {"model": "minilm"}, param="input"),
    Bad("dimensions", EMBEDDINGS, embedding(dimensions=8), param="dimensions"),
    Bad("encoding format", EMBEDDINGS, embedding(encoding_format="int8"), param="encoding_format"),
    Bad("embeddings of a chat model", EMBEDDINGS, embedding(model=STORIES), param="model"),
    Bad("embeddings of an unknown model", EMBEDDINGS, embedding(model="nope"), status=404),
    # --- models
    Bad("unknown model card", "/v1/models/nope", method="GET", status=404, param="model"),
    Bad("wrong method on models", "/v1/models", method="DELETE", status=405),
    Bad("wrong method on chat", CHAT, method="GET", status=405),
    Bad("unknown route", "/v1/nothing-here", method="GET", status=404),
    # --- sessions
    Bad("session name wrong type", "/v1/sessions", {"name": 5}, param="name"),
    Bad("session name empty", "/v1/sessions", {"name": ""}, param="name"),
    Bad("session unknown field", "/v1/sessions", {"colour": "red"}, param="colour"),
    Bad("session unknown preset", "/v1/sessions", {"preset": "nope"}, param="preset"),
    Bad("session unknown model", "/v1/sessions", {"model": "nope"}, param="model"),
    Bad("session name taken", "/v1/sessions", {"name": "taken"}, status=409, param="name"),
    Bad("session not found", "/v1/sessions/nope", method="GET", status=404),
    Bad("delete a missing session", "/v1/sessions/nope", method="DELETE", status=404),
    Bad("messages of a missing session", "/v1/sessions/nope/messages", method="GET", status=404),
    Bad("session list limit", "/v1/sessions?limit=0", method="GET", param="query.limit"),
]


def send(server: LiveServer, bad: Bad) -> httpx.Response:
    options: dict[str, Any] = {"headers": bad.headers, "timeout": 60}
    if isinstance(bad.body, bytes):
        options["content"] = bad.body
        options["headers"] = {"content-type": "application/json", **bad.headers}
    elif bad.body is not None:
        options["json"] = bad.body
    return httpx.request(bad.method, server.url + bad.path, **options)


@pytest.mark.parametrize("bad", TABLE, ids=[bad.name for bad in TABLE])
def test_bad_input_gets_a_clear_error(server: LiveServer, bad: Bad) -> None:
    response = send(server, bad)
    assert response.status_code == bad.status, response.text
    assert "traceback" not in response.text.lower()
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 5
    assert isinstance(error["type"], str)
    if bad.param is not None:
        assert error["param"] == bad.param, error
    assert bad.says.lower() in error["message"].lower()


def test_a_chunked_body_over_the_limit_is_413(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "stories260K", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 512 + 2):
            yield b"x" * 512
        yield b'"}]}'

    response = httpx.post(server.url + CHAT, content=chunks(), timeout=30)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "max_request_bytes" in response.json()["error"]["message"]


def test_json_sent_as_a_form_is_read_as_json(server: LiveServer) -> None:
    # What `curl -d '{...}'` sends: the content type says form, the body is JSON.
    response = httpx.post(
        server.url + CHAT,
        content=b'{"model": "stories260K", "messages": [{"role": "user", "content": "Hi"}],'
        b' "max_tokens": 2}',
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_context_overflow_error_carries_the_numbers(server: LiveServer) -> None:
    response = send(server, Bad("", CHAT, chat(max_tokens=100_000)))
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["n_ctx"] == 512 and error["n_prompt_tokens"] > 0


def test_the_server_keeps_serving(server: LiveServer) -> None:
    # Runs after the table (file order): every bad request above left the server healthy.
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    answer = httpx.post(server.url + CHAT, json=chat(temperature=0), timeout=60)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
    assert server.state.service.in_flight == 0
    assert all(model.active == 0 for model in server.state.manager.status())
