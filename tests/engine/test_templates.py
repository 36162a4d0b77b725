"""Chat templates: the real templates of GGUF files, built-in fallbacks, overrides, errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hoshikage.engine.model import LlamaModel
from hoshikage.engine.templates import (
    BUILTIN_TEMPLATES,
    CHATML_TEMPLATE,
    PLAIN_TEMPLATE,
    TRANSCRIPT_TEMPLATE,
    ChatTemplate,
)
from hoshikage.engine.types import ChatMessage, EngineError

QWEN2_IM_START = 151644
QWEN2_IM_END = 151645

SYSTEM_AND_USER = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "What is 星影?"),
]
CONVERSATION = [
    ChatMessage("system", "S"),
    ChatMessage("user", "U1"),
    ChatMessage("assistant", "A1"),
    ChatMessage("user", "U2"),
]


def load_vocab(vocab_dir: Path, name: str) -> Iterator[LlamaModel]:
    model = LlamaModel(vocab_dir / f"ggml-vocab-{name}.gguf", vocab_only=True)
    try:
        yield model
    finally:
        model.close()


@pytest.fixture(scope="module")
def qwen2(vocab_dir: Path) -> Iterator[LlamaModel]:
    yield from load_vocab(vocab_dir, "qwen2")


@pytest.fixture(scope="module")
def phi3(vocab_dir: Path) -> Iterator[LlamaModel]:
    yield from load_vocab(vocab_dir, "phi-3")


@pytest.fixture(scope="module")
def llama_spm(vocab_dir: Path) -> Iterator[LlamaModel]:
    yield from load_vocab(vocab_dir, "llama-spm")


def template_of(model: LlamaModel, override: str | None = None) -> ChatTemplate:
    """What the engine builds for a model: its own template unless overridden."""
    return ChatTemplate.resolve(
        override,
        model.chat_template(),
        bos_token=model.token_text(model.bos_id),
        eos_token=model.token_text(model.eos_id),
    )


# --- the real GGUF templates ----------------------------------------------------------------


def test_qwen2_chatml_exact_rendering(qwen2: LlamaModel) -> None:
    template = template_of(qwen2)
    assert template.origin == "gguf"
    assert not template.is_fallback
    assert template.render(SYSTEM_AND_USER) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 星影?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen2_without_generation_prompt(qwen2: LlamaModel) -> None:
    rendered = template_of(qwen2).render(
        [*SYSTEM_AND_USER, ChatMessage("assistant", "A star's shadow.")],
        add_generation_prompt=False,
    )
    assert rendered.endswith("<|im_start|>assistant\nA star's shadow.<|im_end|>\n")


def test_qwen2_adds_its_default_system_prompt(qwen2: LlamaModel) -> None:
    rendered = template_of(qwen2).render([ChatMessage("user", "Hi")])
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_phi3_renders_its_markers(phi3: LlamaModel) -> None:
    template = template_of(phi3)
    assert template.origin == "gguf"
    assert template.bos_token == "<s>"
    rendered = template.render(
        [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello."), ChatMessage("user", "Bye")]
    )
    assert rendered == (
        "<s><|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n"
    )
    assert rendered.count("<|user|>") == 2
    assert rendered.count("<|assistant|>") == 2


def test_model_without_template_falls_back_to_plain(llama_spm: LlamaModel) -> None:
    assert llama_spm.chat_template() is None
    template = template_of(llama_spm)
    assert template.is_fallback
    assert template.origin == "built-in:plain"
    assert template.source == PLAIN_TEMPLATE
    rendered = template.render(SYSTEM_AND_USER)
    assert rendered.startswith("You are a helpful assistant.")
    assert rendered.endswith("What is 星影?")
    assert "<|" not in rendered


def test_plain_fallback_separates_system_prompt_and_turns(llama_spm: LlamaModel) -> None:
    assert template_of(llama_spm).render(CONVERSATION) == "S\n\nU1A1\nU2"


# --- overrides --------------------------------------------------------------------------------


def test_builtin_names() -> None:
    assert set(BUILTIN_TEMPLATES) == {"plain", "transcript", "chatml"}


def test_override_by_builtin_name_chatml(llama_spm: LlamaModel) -> None:
    template = template_of(llama_spm, "chatml")
    assert template.origin == "built-in:chatml"
    assert not template.is_fallback
    assert template.source == CHATML_TEMPLATE
    rendered = template.render(SYSTEM_AND_USER)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert "<|im_start|>user\nWhat is 星影?<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")


def test_override_beats_the_gguf_template(phi3: LlamaModel) -> None:
    rendered = template_of(phi3, "chatml").render(SYSTEM_AND_USER)
    assert "<|user|>" not in rendered
    assert "<|im_start|>user" in rendered


def test_builtin_chatml_matches_the_real_chatml(qwen2: LlamaModel) -> None:
    real = template_of(qwen2).render(CONVERSATION)
    assert template_of(qwen2, "chatml").render(CONVERSATION) == real


def test_override_by_builtin_name_transcript(qwen2: LlamaModel) -> None:
    template = template_of(qwen2, "transcript")
    assert template.origin == "built-in:transcript"
    assert template.source == TRANSCRIPT_TEMPLATE
    rendered = template.render(CONVERSATION)
    for label in ("System: S", "User: U1", "Assistant: A1", "User: U2"):
        assert label in rendered
    assert rendered.endswith("Assistant:")
    assert "<|im_start|>" not in rendered
    without_prompt = template.render(CONVERSATION, add_generation_prompt=False)
    assert not without_prompt.endswith("Assistant:")


def test_transcript_puts_each_turn_on_its_own_line(qwen2: LlamaModel) -> None:
    assert template_of(qwen2, "transcript").render(CONVERSATION) == (
        "System: S\nUser: U1\nAssistant: A1\nUser: U2\nAssistant:"
    )


def test_override_by_jinja_string(qwen2: LlamaModel) -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    template = template_of(qwen2, source)
    assert template.origin == "settings"
    assert not template.is_fallback
    assert template.render([ChatMessage("user", "Hi")]) == (
        "<|endoftext|>[user]Hi<|endoftext|>[assistant]"
    )


def test_empty_override_means_no_override(qwen2: LlamaModel) -> None:
    assert template_of(qwen2, "").origin == "gguf"


def test_strftime_now_is_available() -> None:
    template = ChatTemplate("{{ strftime_now('%Y') }}", origin="settings")
    assert template.render([]) == str(datetime.now().year)


# --- errors -----------------------------------------------------------------------------------


def test_raise_exception_surfaces_as_engine_error() -> None:
    template = ChatTemplate.resolve(
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}",
        None,
        bos_token="",
        eos_token="",
    )
    assert template.render([ChatMessage("user", "fine")]) == "fine"
    with pytest.raises(EngineError, match="System role not supported") as caught:
        template.render(SYSTEM_AND_USER)
    assert "chat template rejected the conversation" in str(caught.value)


def test_syntax_error_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match=r"chat template \(settings\) does not compile"):
        ChatTemplate.resolve(
            "{% for m in messages %}{{ m.content }", None, bos_token="", eos_token=""
        )


def test_unknown_tag_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="does not compile"):
        ChatTemplate("{% frobnicate %}", origin="gguf")


def test_sandbox_refuses_to_modify_the_conversation() -> None:
    template = ChatTemplate("{{ messages.append(1) }}", origin="settings")
    with pytest.raises(EngineError):
        template.render([ChatMessage("user", "hi")])


# --- tokenizing rendered prompts ------------------------------------------------------------


def test_rendered_chatml_tokenizes_to_special_tokens(qwen2: LlamaModel) -> None:
    assert qwen2.tokenize("<|im_start|>", add_special=False) == [QWEN2_IM_START]
    assert qwen2.token_text(QWEN2_IM_START) == "<|im_start|>"
    assert qwen2.token_text(QWEN2_IM_END) == "<|im_end|>"

    ids = qwen2.tokenize(template_of(qwen2).render(SYSTEM_AND_USER), parse_special=True)
    assert ids[0] == QWEN2_IM_START
    assert ids.count(QWEN2_IM_START) == 3
    assert ids.count(QWEN2_IM_END) == 2
    assert ids[-3] == QWEN2_IM_START  # ... <|im_start|> assistant \n
    assert qwen2.bos_id not in ids  # Qwen2 adds no BOS


def test_without_parse_special_markers_are_plain_text(qwen2: LlamaModel) -> None:
    ids = qwen2.tokenize(template_of(qwen2).render(SYSTEM_AND_USER), parse_special=False)
    assert QWEN2_IM_START not in ids
    assert QWEN2_IM_END not in ids


def test_no_duplicated_bos_when_the_template_writes_one(phi3: LlamaModel) -> None:
    assert phi3.add_bos
    rendered = template_of(phi3).render([ChatMessage("user", "Hi")])
    assert rendered.startswith("<s>")
    ids = phi3.tokenize(rendered)
    assert ids[0] == phi3.bos_id
    assert ids.count(phi3.bos_id) == 1
    user_marker = phi3.tokenize("<|user|>", add_special=False)
    assert len(user_marker) == 1
    assert ids[1] == user_marker[0]


def test_bos_added_once_for_the_plain_fallback(llama_spm: LlamaModel) -> None:
    ids = llama_spm.tokenize(template_of(llama_spm).render(SYSTEM_AND_USER))
    assert ids[0] == llama_spm.bos_id
    assert ids.count(llama_spm.bos_id) == 1
