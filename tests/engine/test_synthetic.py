"""Synthetic GGUF models: they must load in llama.cpp, tokenise, template and generate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from hoshikage.engine import ChatMessage, Engine, LoadOptions, SamplingParams
from hoshikage.engine.model import LlamaModel
from hoshikage.models.synthetic import (
    CHATML_TEMPLATE,
    QWEN2_5_0_5B,
    ModelShape,
    build_random_model_like,
    build_tiny_chat_model,
)

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=8)
# Qwen2's layout (tied embeddings, q/k/v biases, grouped KV heads) at a size that builds fast.
SMALL_QWEN2 = ModelShape("qwen2", 2, 64, 4, 2, 128, 4096, 1000000.0, 1e-6, True)
QWEN2_VOCAB_SIZE = 151_936


@pytest.fixture(scope="module")
def tiny_engine(tiny_chat_model: Path) -> Iterator[Engine]:
    with Engine(tiny_chat_model, LoadOptions(n_ctx=256)) as engine:
        yield engine


@pytest.fixture(scope="module")
def small_qwen2_model(tmp_path_factory: pytest.TempPathFactory, vocab_dir: Path) -> Path:
    return build_random_model_like(
        tmp_path_factory.mktemp("qwen2") / "small-qwen2.gguf",
        vocab_dir / "ggml-vocab-qwen2.gguf",
        SMALL_QWEN2,
    )


def test_tiny_model_loads_with_its_chatml_template(tiny_engine: Engine) -> None:
    info = tiny_engine.info
    assert info.architecture == "llama"
    assert info.n_layer == 2
    assert info.chat_template_source == "gguf"
    assert tiny_engine.template.source == CHATML_TEMPLATE
    assert info.n_params == ModelShape(
        "llama", 2, 64, 4, 2, 128, 2048, 10000.0, 1e-5, False
    ).n_params(tiny_engine.model.n_vocab)


def test_tiny_vocabulary_has_chat_specials_and_byte_fallback(tiny_engine: Engine) -> None:
    model = tiny_engine.model
    im_start = model.tokenize("<|im_start|>", add_special=False)
    im_end = model.tokenize("<|im_end|>", add_special=False)
    assert len(im_start) == len(im_end) == 1
    assert model.token_text(model.eos_id) == "</s>"
    # <|im_end|> is the end-of-turn token: llama.cpp stops on it as on EOS.
    assert model.is_end_of_generation(im_end[0])
    assert model.is_end_of_generation(model.eos_id)
    assert not model.is_end_of_generation(im_start[0])
    text = "héllo wörld, 星影!"
    assert model.detokenize(model.tokenize(text, add_special=False)) == text


def test_tiny_model_chats_through_the_template(tiny_engine: Engine) -> None:
    messages = [ChatMessage("system", "Be kind."), ChatMessage("user", "Hi")]
    rendered = tiny_engine.template.render(messages)
    assert rendered == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    generation = tiny_engine.chat(messages, GREEDY)
    finish = generation.wait()
    assert finish.usage.prompt_tokens == len(tiny_engine.model.tokenize(rendered))
    assert 0 < finish.usage.completion_tokens <= GREEDY.max_tokens  # type: ignore[operator]


def test_builds_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    first = build_tiny_chat_model(tmp_path / "a.gguf", n_layer=1, seed=7).read_bytes()
    again = build_tiny_chat_model(tmp_path / "b.gguf", n_layer=1, seed=7).read_bytes()
    other = build_tiny_chat_model(tmp_path / "c.gguf", n_layer=1, seed=8).read_bytes()
    assert first == again
    assert first != other
    assert not list(tmp_path.glob("*.tmp"))


def test_model_like_qwen2_copies_the_tokenizer(small_qwen2_model: Path, vocab_dir: Path) -> None:
    vocab = LlamaModel(vocab_dir / "ggml-vocab-qwen2.gguf", vocab_only=True)
    try:
        with Engine(small_qwen2_model, LoadOptions(n_ctx=256)) as engine:
            info = engine.info
            assert info.architecture == "qwen2"
            assert engine.model.n_vocab == QWEN2_VOCAB_SIZE
            # Counting parameters checks the layout: q/k/v biases present, no output.weight.
            assert info.n_params == SMALL_QWEN2.n_params(QWEN2_VOCAB_SIZE)
            assert info.metadata["tokenizer.ggml.pre"] == "qwen2"
            assert info.chat_template_source == "gguf"
            assert engine.template.source == vocab.chat_template()
            text = "Hello, world! 星影 123"
            assert engine.model.tokenize(text) == vocab.tokenize(text)
    finally:
        vocab.close()


def test_model_like_qwen2_renders_chatml_and_runs(small_qwen2_model: Path) -> None:
    with Engine(small_qwen2_model, LoadOptions(n_ctx=256)) as engine:
        prepared = engine.prepare_chat([ChatMessage("user", "Hello")], GREEDY)
        im_start = engine.model.tokenize("<|im_start|>", add_special=False)
        assert len(im_start) == 1
        assert prepared.tokens.count(im_start[0]) >= 2  # the user turn and the answer's
        generation = engine.generate(prepared, GREEDY)
        finish = generation.wait()
        assert finish.usage.prompt_tokens == len(prepared.tokens)
        assert finish.usage.completion_tokens > 0


def test_qwen2_5_0_5b_shape_matches_the_real_model() -> None:
    # Qwen2.5-0.5B-Instruct has 494,032,768 parameters: the same count means the same tensors.
    assert QWEN2_5_0_5B.n_params(QWEN2_VOCAB_SIZE) == 494_032_768
    assert QWEN2_5_0_5B.head_dim == 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "mamba"}, "supported architectures"),
        ({"n_head": 5}, "n_head"),
        ({"n_head_kv": 3}, "n_head_kv"),
        ({"n_layer": 0}, "positive"),
    ],
)
def test_model_shape_rejects_what_cannot_be_built(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "architecture": "llama",
        "n_layer": 2,
        "n_embd": 64,
        "n_head": 4,
        "n_head_kv": 2,
        "n_ff": 128,
        "n_ctx_train": 2048,
        "rope_theta": 10000.0,
        "rms_eps": 1e-5,
        "tied_embeddings": False,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ModelShape(**fields)  # type: ignore[arg-type]


def test_model_like_needs_a_vocabulary(tmp_path: Path) -> None:
    no_vocab = tmp_path / "no-vocab.gguf"
    writer = gguf.GGUFWriter(no_vocab, "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.tokens"):
        build_random_model_like(tmp_path / "out.gguf", no_vocab, SMALL_QWEN2)
    assert not (tmp_path / "out.gguf").exists()
