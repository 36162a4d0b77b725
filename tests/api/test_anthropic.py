"""Anthropic's Messages API through the official `anthropic` SDK against a live server, with
SmolLM2-135M-Instruct under Qwen2.5's template (tools in the Hermes format)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.api.conftest import LiveServer, ServerFactory

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"
MODEL = "smollm"
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}},
    "required": ["city"],
}
TOOLS: list[Any] = [
    {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER_SCHEMA},
    {"name": "get_time", "description": "The time", "input_schema": {"type": "object"}},
]
QUESTION: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory, shared_models: Path) -> LiveServer:
    template = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    path = shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return module_server_factory(
        model=MODEL, model_aliases={MODEL: path}, n_ctx=2048, chat_template=template
    )


@pytest.fixture
def client(server: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as api:
        yield api


def test_a_message_and_its_usage(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(
        model=MODEL,
        max_tokens=8,
        messages=QUESTION,
        system="Be brief.",
        extra_body={"temperature": 0},
    )
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.content[0].type == "text" and reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.output_tokens <= 8
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) > 10


def test_streaming_gives_the_same_text(client: anthropic.Anthropic) -> None:
    fields: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": QUESTION}
    whole = client.messages.create(**fields, extra_body={"temperature": 0})
    with client.messages.stream(**fields, extra_body={"temperature": 0}) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason


def test_a_named_tool_round_trip(client: anthropic.Anthropic) -> None:
    forced = client.messages.create(
        model=MODEL,
        max_tokens=80,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        extra_body={"temperature": 0},
    )
    assert forced.stop_reason == "tool_use"
    uses = [block for block in forced.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)
    answer = client.messages.create(
        model=MODEL,
        max_tokens=20,
        tools=TOOLS,
        tool_choice={"type": "none"},
        messages=[
            *QUESTION,
            {"role": "assistant", "content": forced.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}
                ],
            },
        ],
        extra_body={"temperature": 0},
    )
    assert answer.content[0].type == "text" and answer.content[0].text
    assert answer.stop_reason in ("end_turn", "max_tokens")


def test_a_streamed_tool_call_arrives_as_input_json(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=80,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "any"},
        extra_body={"temperature": 0},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "input_json" in kinds
    uses = [block for block in final.content if block.type == "tool_use"]
    assert uses and final.stop_reason == "tool_use"
    for use in uses:
        assert use.name in ("get_weather", "get_time")


def test_count_tokens_counts_tools_too(client: anthropic.Anthropic) -> None:
    bare = client.messages.count_tokens(model=MODEL, messages=QUESTION)
    with_tools = client.messages.count_tokens(model=MODEL, messages=QUESTION, tools=TOOLS)
    assert 0 < bare.input_tokens < with_tools.input_tokens


def test_errors_have_anthropics_shape(server: LiveServer, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=4, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError, match="not among the tools"):
        client.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "missing"},
        )
    reply = httpx.post(f"{server.url}/v1/messages", json={"model": MODEL, "messages": QUESTION})
    assert reply.status_code == 400  # max_tokens is required, as Anthropic requires it
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    image = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]
    refused = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": image}]},
    )
    assert refused.status_code == 400 and "image" in refused.json()["error"]["message"]


def test_x_api_key_is_accepted_where_keys_are_required(
    server_factory: ServerFactory, shared_models: Path
) -> None:
    keyed = server_factory(api_keys=["k-anthropic"])
    body = {"model": "stories260K", "max_tokens": 4, "messages": QUESTION}
    ok = httpx.post(f"{keyed.url}/v1/messages", json=body, headers={"x-api-key": "k-anthropic"})
    assert ok.status_code == 200, ok.text
    with (
        anthropic.Anthropic(base_url=keyed.url, api_key="wrong", max_retries=0) as api,
        pytest.raises(anthropic.AuthenticationError),
    ):
        api.messages.create(model="stories260K", max_tokens=4, messages=QUESTION)
    # The same key in either header is the same caller: it finds its own sessions.
    headers = {"x-api-key": "k-anthropic", "anthropic-version": "2023-06-01"}
    sessions = httpx.get(f"{keyed.url}/v1/sessions", headers=headers)
    bearer = httpx.get(f"{keyed.url}/v1/sessions", headers={"authorization": "Bearer k-anthropic"})
    assert sessions.status_code == bearer.status_code == 200
    assert json.dumps(sessions.json()) == json.dumps(bearer.json())


def test_claude_codes_changing_billing_line_does_not_defeat_prefix_reuse(
    server: LiveServer,
) -> None:
    instructions = "You are a coding agent. " + "Follow the rules of the repository. " * 40
    usages = []
    for nonce in ("36ee5", "0aaa9"):
        billing = (
            f"x-anthropic-billing-header: cc_version=2.1.177.01c; cc_entrypoint=cli; cch={nonce};"
        )
        body = {
            "model": MODEL,
            "max_tokens": 2,
            "system": [{"type": "text", "text": billing}, {"type": "text", "text": instructions}],
            "messages": QUESTION,
        }
        reply = httpx.post(f"{server.url}/v1/messages", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        usages.append(reply.json()["usage"])
    second = usages[1]
    total = second["input_tokens"] + second["cache_read_input_tokens"]
    assert second["cache_read_input_tokens"] >= total - 2  # all but the last token reused
