"""Real chat templates given tools, calls and results with Hugging Face's conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoshikage.engine import ChatMessage, ToolCall, ToolSpec
from hoshikage.engine.templates import ChatTemplate

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = ToolCall("call_1", "get_weather", json.dumps({"city": "Paris"}))
CONVERSATION = [
    ChatMessage("system", "You help."),
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_1", name="get_weather"),
]


def template(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / name).read_text(encoding="utf-8"), bos_token="<s>")


@pytest.mark.parametrize(
    ("name", "call_text"),
    [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", '"arguments": {"city": "Paris"}'),
        ("Qwen-Qwen3-0.6B.jinja", '"arguments": {"city": "Paris"}'),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "Paris"),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", '"parameters": {"city": "Paris"}'),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "Paris"),
        ("Qwen3-Coder.jinja", "<parameter=city>"),
    ],
)
def test_tools_calls_and_results_reach_the_prompt(name: str, call_text: str) -> None:
    chat = template(name)
    assert chat.renders_tools
    prompt = chat.render(CONVERSATION, tools=[WEATHER])
    assert "get_weather" in prompt
    assert "The weather in a city" in prompt
    assert call_text in prompt  # the call, with its arguments as an object
    assert "temp_c" in prompt  # the tool's result


def test_without_tools_the_template_says_nothing_of_them() -> None:
    chat = template("Qwen-Qwen2.5-7B-Instruct.jinja")
    prompt = chat.render([ChatMessage("user", "Hi")])
    assert "<tools>" not in prompt


def test_thinking_is_switched_by_the_templates_own_variable() -> None:
    chat = template("Qwen-Qwen3-0.6B.jinja")
    question = [ChatMessage("user", "2+2?")]
    off = chat.render(question, variables={"enable_thinking": False})
    on = chat.render(question, variables={"enable_thinking": True})
    assert off.endswith("<think>\n\n</think>\n\n") and not on.endswith("</think>\n\n")


def test_reasoning_of_earlier_answers_is_given_as_reasoning_content() -> None:
    chat = template("Qwen-Qwen3-0.6B.jinja")
    messages = [
        ChatMessage("user", "2+2?"),
        ChatMessage("assistant", "4", reasoning="Two and two."),
        ChatMessage("user", "3+3?"),
    ]
    # Qwen3 drops the thinking of turns before the last question, as it was trained.
    assert "Two and two." not in chat.render(messages)
    assert "<think>\nTwo and two.\n</think>" in chat.render(
        messages[:2], add_generation_prompt=False
    )


def test_a_template_without_tools_does_not_claim_them(shared_models: Path) -> None:
    from hoshikage.engine.model import LlamaModel

    model = LlamaModel(
        shared_models / "instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf", vocab_only=True
    )
    try:
        source = model.chat_template()
    finally:
        model.close()
    assert source is not None
    assert not ChatTemplate(source).renders_tools
