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
