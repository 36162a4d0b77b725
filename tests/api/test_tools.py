"""Tool calling through a live server, real inference, and the official clients.

SmolLM2-135M-Instruct (a real instruction-tuned model) is served twice: with its own ChatML
template, which knows no tools (the generic tool prompt and grammar), and with Qwen2.5's
template, which lays tools out in the Hermes format (`<tool_call>…</tool_call>`). A forced
call (`required`, or a named function) must come out valid against its schema from either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"
MODEL = "smollm"

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a timezone",
            "parameters": TIME_SCHEMA,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module", params=["generic", "hermes"])
def server(
    request: pytest.FixtureRequest, module_server_factory: ServerFactory, smollm_path: Path
) -> LiveServer:
    template = None
    if request.param == "hermes":
        template = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    return module_server_factory(
        model=MODEL,
        model_aliases={MODEL: smollm_path},
        n_ctx=2048,
        chat_template=template,
    )


@pytest.fixture(scope="module")
def smollm_path(shared_models: Path) -> Path:
    return shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def client(server: LiveServer, openai_client: OpenAIFactory) -> openai.OpenAI:
    return openai_client(server)


def ask(client: openai.OpenAI, **fields: Any) -> Any:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": QUESTION,
        "tools": TOOLS,
        "temperature": 0,
        "max_tokens": 120,
        **fields,
    }
    return client.chat.completions.create(**body)


def assert_valid(calls: Any) -> None:
    assert calls, "no tool calls"
    for call in calls:
        assert call.type == "function"
        assert call.id
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_a_named_function_is_called_with_valid_arguments(client: openai.OpenAI) -> None:
    for name in ("get_weather", "get_time"):
        reply = ask(client, tool_choice={"type": "function", "function": {"name": name}})
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert {call.function.name for call in choice.message.tool_calls} == {name}
        assert_valid(choice.message.tool_calls)
        assert choice.message.content is None  # OpenAI's: no text beside the calls


def test_required_calls_a_tool_and_parallel_false_allows_one(client: openai.OpenAI) -> None:
    reply = ask(client, tool_choice="required")
    assert_valid(reply.choices[0].message.tool_calls)
    single = ask(client, tool_choice="required", parallel_tool_calls=False)
    assert len(single.choices[0].message.tool_calls) == 1
    assert_valid(single.choices[0].message.tool_calls)


def test_none_answers_in_text(client: openai.OpenAI) -> None:
    reply = ask(client, tool_choice="none", max_tokens=16)
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"


def test_streamed_calls_reassemble_to_the_whole_answers(client: openai.OpenAI) -> None:
    whole = ask(client, tool_choice="required").choices[0].message.tool_calls
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in ask(client, tool_choice="required", stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or ():
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            if piece.id:
                assert not call["id"], "the id comes once"
                call["id"] = piece.id
            if piece.function and piece.function.name:
                assert not call["name"], "the name comes once"
                call["name"] = piece.function.name
            if piece.function and piece.function.arguments:
                call["arguments"] += piece.function.arguments
        assert not delta.content, "no text leaks around the calls"
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(calls) == list(range(len(whole)))  # each call its own index, from 0
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == [
        (call.function.name, call.function.arguments) for call in whole
    ]
    assert len({c["id"] for c in calls.values()}) == len(calls)


def test_a_call_then_its_result_then_the_answer(client: openai.OpenAI) -> None:
    first = ask(
        client,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature": 21, "sky": "sunny"}),
        },
    ]
    second = ask(client, messages=history, tool_choice="none", max_tokens=40)
    assert second.choices[0].message.content
    assert second.choices[0].message.tool_calls is None


def test_the_tool_format_is_said_in_a_header(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "tools": TOOLS, "max_tokens": 1}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    expected = "hermes" if server.settings.chat_template else "generic"
    assert response.headers["x-hoshikage-tool-format"] == expected


def test_a_session_stores_calls_and_results_and_continues(server: LiveServer) -> None:
    url = f"{server.url}/v1/chat/completions"
    session = f"tools-{'hermes' if server.settings.chat_template else 'generic'}"
    forced = {"type": "function", "function": {"name": "get_weather"}}
    base = {"model": MODEL, "tools": TOOLS, "temperature": 0, "session_id": session}
    first = httpx.post(
        url,
        json={**base, "messages": QUESTION, "tool_choice": forced, "parallel_tool_calls": False},
        timeout=60,
    ).json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    result = {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'}
    # Only the new message: the stored history (with the call) is continued.
    second = httpx.post(
        url,
        json={**base, "messages": [result], "tool_choice": "none", "max_tokens": 24},
        timeout=60,
    )
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"]
    stored = httpx.get(f"{server.url}/v1/sessions/{session}/messages", timeout=10).json()
    roles = [message["role"] for message in stored["data"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert stored["data"][1]["tool_calls"][0]["id"] == call["id"]
    assert stored["data"][2]["tool_call_id"] == call["id"]


# --- Ollama ----------------------------------------------------------------------------------
def test_ollama_chat_returns_calls_with_object_arguments(server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "tools": TOOLS,
        "tool_choice": "required",  # Hoshikage honours it (Ollama itself has none)
        "parallel_tool_calls": False,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 120},
    }
    reply = httpx.post(f"{server.url}/api/chat", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    calls = reply.json()["message"]["tool_calls"]
    assert len(calls) == 1
    function = calls[0]["function"]
    jsonschema.validate(function["arguments"], SCHEMAS[function["name"]])  # an object
    assert reply.json()["done_reason"] == "stop"


def test_ollama_streams_each_call_whole(server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "options": {"temperature": 0, "num_predict": 120},
    }
    calls: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line:
                message = json.loads(line).get("message", {})
                calls += message.get("tool_calls") or []
    assert calls and all(call["function"]["name"] == "get_time" for call in calls)
    for call in calls:
        jsonschema.validate(call["function"]["arguments"], TIME_SCHEMA)


def test_the_ollama_client_sends_a_tool_result_back(server: LiveServer) -> None:
    import ollama

    history: list[Any] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": '{"temperature": 21}'},
    ]
    with ollama.Client(host=server.url, timeout=60) as client:
        reply = client.chat(
            model=MODEL,
            messages=history,
            tools=TOOLS,
            options={"temperature": 0, "num_predict": 24},
        )
    assert reply.message.content or reply.message.tool_calls
