"""Thinking apart from the answer, in both APIs, through real inference.

SmolLM2 under DeepSeek-R1's template, whose generation prompt opens `<think>`: the model's
answer starts inside the thinking block, so what it writes is reasoning until it closes it
(this small model never does within a few tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, ServerFactory

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"
MODEL = "thinker"
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory, shared_models: Path) -> LiveServer:
    template = TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"
    return module_server_factory(
        model=MODEL,
        model_aliases={MODEL: shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"},
        n_ctx=1024,
        chat_template=template.read_text(encoding="utf-8"),
    )


def chat(server: LiveServer, **fields: Any) -> Any:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0, **fields}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_openai_returns_reasoning_content_apart(server: LiveServer) -> None:
    message = chat(server)["choices"][0]["message"]
    assert message["reasoning_content"].strip()
    assert "<think>" not in message["reasoning_content"]
    raw = chat(server, reasoning_format="none")["choices"][0]["message"]
    assert "reasoning_content" not in raw
    assert raw["content"].strip() == message["reasoning_content"].strip()  # the text as it came


def test_openai_streams_reasoning_deltas(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    reasoning = ""
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    reasoning += choice["delta"].get("reasoning_content") or ""
    assert reasoning == chat(server)["choices"][0]["message"]["reasoning_content"]


def test_ollama_think_returns_message_thinking(server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "think": True,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 12},
    }
    reply = httpx.post(f"{server.url}/api/chat", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"]["thinking"].strip()
    generated = httpx.post(
        f"{server.url}/api/generate",
        json={"model": MODEL, "prompt": "2 + 2?", "stream": False, "options": {"num_predict": 8}},
        timeout=60,
    )
    assert generated.json()["thinking"].strip()


def test_ollama_think_on_a_model_that_cannot_think_is_refused(live_server: LiveServer) -> None:
    body = {"model": "stories260K", "messages": QUESTION, "think": True, "stream": False}
    reply = httpx.post(f"{live_server.url}/api/chat", json=body, timeout=60)
    assert reply.status_code == 400
    assert "does not support thinking" in reply.json()["error"]


def test_the_thinking_capability_is_listed(server: LiveServer) -> None:
    shown = httpx.post(f"{server.url}/api/show", json={"model": MODEL}, timeout=30).json()
    assert shown["capabilities"] == ["completion", "tools", "thinking"]


def test_a_session_stores_thinking_beside_the_answer(server: LiveServer) -> None:
    chat(server, session_id="thoughts")
    stored = httpx.get(f"{server.url}/v1/sessions/thoughts/messages", timeout=10).json()["data"]
    answer = stored[-1]
    assert answer["role"] == "assistant"
    assert answer["reasoning"].strip()
    assert answer["reasoning"] not in answer["content"] or not answer["content"]
