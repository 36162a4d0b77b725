"""Agent frameworks against a live server, unchanged: LangChain (OpenAI and Ollama chat
models) and the OpenAI Agents SDK, with SmolLM2-135M-Instruct under Qwen2.5's template."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from tests.api.conftest import LiveServer, ServerFactory
from tests.api.helpers import run_weather_agent

# LangChain's chat models open HTTP clients they never close (they have no close()); their
# sockets are collected later, wherever the garbage collector happens to run.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"
MODEL = "smollm"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ZONE = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny and 21 degrees in {city}."


@tool
def get_time(timezone: str) -> str:
    """The current time in a timezone."""
    return "12:00"


@pytest.fixture(autouse=True)
def collect_clients() -> Iterator[None]:
    """Collect the test's unclosed clients while its warning filter still applies."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory, shared_models: Path) -> LiveServer:
    template = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    path = shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return module_server_factory(
        model=MODEL, model_aliases={MODEL: path}, n_ctx=2048, chat_template=template
    )


def chat_openai(server: LiveServer) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=MODEL,
        base_url=server.url + "/v1",
        api_key="unused",  # type: ignore[arg-type]
        temperature=0,
        max_tokens=80,  # type: ignore[call-arg]
        max_retries=0,
    )


@pytest.mark.parametrize("choice", ["get_time", "any"])
def test_langchain_chat_openai_forced_tool(server: LiveServer, choice: str) -> None:
    model = chat_openai(server).bind_tools([get_weather, get_time], tool_choice=choice)
    reply = model.invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls, reply
    if choice != "any":
        assert {call["name"] for call in reply.tool_calls} == {choice}
    schemas = {"get_weather": CITY, "get_time": ZONE}
    for call in reply.tool_calls:
        jsonschema.validate(call["args"], schemas[call["name"]])


def test_langchain_chat_openai_streams_the_same_call(server: LiveServer) -> None:
    model = chat_openai(server).bind_tools([get_weather], tool_choice="get_weather")
    whole = model.invoke("Weather in Oslo?")
    streamed: Any = None
    for chunk in model.stream("Weather in Oslo?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        (c["name"], c["args"]) for c in whole.tool_calls
    ]


def test_langchain_chat_ollama_round_trip(server: LiveServer) -> None:
    from langchain_ollama import ChatOllama

    model = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=40).bind_tools(
        [get_weather]
    )
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}
    history = [
        HumanMessage("What is the weather in Paris?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage(get_weather.invoke({"city": "Paris"}), tool_call_id="call_1"),
    ]
    reply = model.invoke(history)
    assert isinstance(reply, AIMessage)
    assert reply.content or reply.tool_calls
    assert reply.response_metadata["done"] is True


def test_openai_agents_sdk_runs_a_tool_loop(server: LiveServer) -> None:
    calls, result = run_weather_agent(server, MODEL, responses=False, max_tokens=60)
    assert calls, "the agent called its tool"
    assert isinstance(result.final_output, str) and result.final_output
