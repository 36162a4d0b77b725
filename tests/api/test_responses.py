"""OpenAI's Responses API through the official `openai` SDK against a live server, with the
server-side state the anchors lack: previous_response_id continues a stored session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory
from tests.api.helpers import run_weather_agent

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"
MODEL = "smollm"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "description": "Weather", "parameters": CITY}
]


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory, shared_models: Path) -> LiveServer:
    template = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    path = shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return module_server_factory(
        model=MODEL, model_aliases={MODEL: path}, n_ctx=2048, chat_template=template
    )


@pytest.fixture
def client(server: LiveServer, openai_client: OpenAIFactory) -> openai.OpenAI:
    return openai_client(server)


def test_a_chain_continues_server_side_and_reuses_the_cache(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL,
        input="My name is Ada and I like tea. Say hello.",
        max_output_tokens=12,
        temperature=0,
    )
    assert first.status in ("completed", "incomplete") and first.output_text
    second = client.responses.create(
        model=MODEL,
        input="What do I like?",
        previous_response_id=first.id,
        max_output_tokens=8,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    assert second.usage is not None and first.usage is not None
    # Only the new input was evaluated: the history came from the slot's KV cache.
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 2
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)


def test_a_function_call_round_trip(client: openai.OpenAI) -> None:
    called = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=60,
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), CITY)
    answer = client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"}],
        tools=TOOLS,
        tool_choice="none",
        temperature=0,
        max_output_tokens=16,
    )
    assert answer.output_text


def test_streaming_events_carry_sequence_numbers(client: openai.OpenAI) -> None:
    kinds = []
    numbers = []
    text = ""
    last: Any = None
    with client.responses.stream(
        model=MODEL, input="Say hi.", max_output_tokens=8, temperature=0
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                text += event.delta
            last = event
    # Cut at max_output_tokens: response.incomplete, as OpenAI ends such a stream.
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
    assert numbers == list(range(len(numbers)))
    assert text and text == last.response.output_text


def test_unknown_previous_response_is_a_404(server: LiveServer) -> None:
    body = {"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"}
    reply = httpx.post(f"{server.url}/v1/responses", json=body, timeout=30)
    assert reply.status_code == 404
    assert reply.json()["error"]["param"] == "previous_response_id"
    bad = httpx.post(
        f"{server.url}/v1/responses",
        json={"model": MODEL, "input": [{"type": "image", "url": "x"}]},
        timeout=30,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


def test_openai_agents_sdk_runs_a_tool_loop_over_responses(server: LiveServer) -> None:
    calls, result = run_weather_agent(server, MODEL, responses=True, max_tokens=400)
    assert calls, "the agent called its tool"
    assert isinstance(result.final_output, str) and result.final_output
