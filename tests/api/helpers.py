"""Small helpers shared by the OpenAI-side API tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import LiveServer

STORIES = "stories260K"
ONCE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Once upon a time"}]


def sse_payloads(text: str) -> list[str]:
    """The data of each server-sent event, in order ('[DONE]' included)."""
    events = [block for block in text.split("\n\n") if block.strip()]
    payloads = []
    for event in events:
        assert event.startswith("data: "), f"not an SSE data event: {event!r}"
        payloads.append(event.removeprefix("data: "))
    return payloads


def stream_json(
    server: LiveServer, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, list[Any]]:
    """POST a streaming request; the response and its events (JSON, then the final '[DONE]')."""
    response = httpx.post(server.url + path, json={**body, "stream": True}, timeout=60)
    payloads = sse_payloads(response.text)
    parsed: list[Any] = [p if p == "[DONE]" else json.loads(p) for p in payloads]
    return response, parsed


def run_weather_agent(
    server: LiveServer, model: str, *, responses: bool, max_tokens: int
) -> tuple[list[str], Any]:
    """One OpenAI Agents SDK run against `server` with a `weather` function tool, its first
    call forced: the cities the tool was called with, and the run's result. `responses`
    picks the Responses API model, else Chat Completions."""
    import asyncio

    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # nothing leaves the machine
    calls: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"Sunny, 21 degrees in {city}."

    async def run() -> Any:
        api = AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        try:
            kind = OpenAIResponsesModel if responses else OpenAIChatCompletionsModel
            agent = Agent(
                name="weather",
                instructions="Answer questions about the weather.",
                model=kind(model=model, openai_client=api),
                model_settings=ModelSettings(
                    tool_choice="weather", temperature=0, max_tokens=max_tokens
                ),
                tools=[weather],
            )
            return await Runner.run(agent, "What is the weather in Paris?", max_turns=3)
        finally:
            await api.close()

    return calls, asyncio.run(run())
