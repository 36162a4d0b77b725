"""Picking the format from real chat templates (tests/toolformats/templates, the models'
GGUFs) and by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoshikage.engine.model import LlamaModel
from hoshikage.toolformats.registry import (
    FORMAT_NAMES,
    detect_format,
    format_named,
    renders_tools,
)
from tests.toolformats.conftest import template

EXPECTED = [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", True),
    ("Qwen-Qwen3-0.6B.jinja", "hermes", True),
    ("Qwen-QwQ-32B.jinja", "hermes", True),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "hermes", True),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "hermes", True),
    ("Qwen3-Coder.jinja", "qwen3_coder", True),
    ("Qwen3.5-4B.jinja", "qwen3_coder", True),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3_json", True),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3_json", True),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", "llama3_json", True),
    ("vllm-tool_chat_template_llama4_json.jinja", "llama3_json", True),
    ("vllm-tool_chat_template_llama3.2_pythonic.jinja", "pythonic", True),
    ("vllm-tool_chat_template_llama4_pythonic.jinja", "pythonic", True),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", True),
    ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral_v11", True),
    ("unsloth-mistral-Devstral-Small-2507.jinja", "mistral_v11", True),
    ("mistralai-Ministral-3-14B-Reasoning-2512.jinja", "mistral_v11", True),
    ("llama-cpp-deepseek-r1.jinja", "deepseek_r1", True),
    # DeepSeek's own templates write calls in history but never lay tools out.
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", "deepseek_r1", False),
    ("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek_v3_1", False),
    # Tools rendered, in syntaxes not known here: the generic format, natively described.
    ("GLM-4.6.jinja", "generic", True),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "generic", True),
    # No tools at all.
    ("google-gemma-2-2b-it.jinja", "generic", False),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "generic", False),
]


@pytest.mark.parametrize(("name", "expected", "native"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_detect_format_on_real_templates(name: str, expected: str, native: bool) -> None:
    found = detect_format(template(name))
    assert (found.name, found.native) == (expected, native)


def test_every_fixture_is_covered() -> None:
    fixtures = {path.name for path in (Path(__file__).parent / "templates").glob("*.jinja")}
    assert fixtures == {name for name, _, _ in EXPECTED}


@pytest.mark.parametrize(
    "gguf",
    [
        "vocab/ggml-vocab-qwen2.gguf",
        "vocab/ggml-vocab-phi-3.gguf",
        "vocab/ggml-vocab-llama-spm.gguf",
        "instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    ],
)
def test_local_models_templates_get_the_generic_format(shared_models: Path, gguf: str) -> None:
    model = LlamaModel(shared_models / gguf, vocab_only=True)
    try:
        found = detect_format(model.chat_template())
    finally:
        model.close()
    assert (found.name, found.native) == ("generic", False)


def test_no_template() -> None:
    assert detect_format(None).name == "generic"
    assert detect_format("").native is False


def test_renders_tools_reads_code_not_text() -> None:
    assert renders_tools("{% if tools %}{{ tools | tojson }}{% endif %}")
    assert renders_tools("{%- for t in tools -%}{{ t }}{%- endfor %}")
    assert not renders_tools("You may use tools. {{ messages[0].content }}")
    assert not renders_tools("{% for call in message.tool_calls %}{{ call }}{% endfor %}")


def test_format_named() -> None:
    for name in FORMAT_NAMES:
        assert format_named(name).name == name
    assert format_named("hermes").native and not format_named("generic").native
    assert format_named("generic", native=True).native
    assert not format_named("mistral_v11", native=False).native
    with pytest.raises(ValueError, match="known: hermes"):
        format_named("nope")
