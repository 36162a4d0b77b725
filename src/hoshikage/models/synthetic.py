"""Random-weight GGUF models of a chosen shape, written with the `gguf` package.

Speed and memory do not depend on the weights' values, so a random model with a real model's
shape and tokenizer measures what the real one would; a tiny one with a ChatML template makes
chat tests fast. Nothing here imports llama.cpp: these files are inputs to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Architectures whose tensor layout is written here: llama's, and qwen2's (llama plus q/k/v
# biases). Others have extra or differently shaped tensors that llama.cpp would refuse.
_BIASED_ATTENTION = {"llama": False, "qwen2": True}

# Random weights at the scale of a freshly initialised transformer keep activations and
# logits finite in F16.
_WEIGHT_SCALE = 0.02
_CHUNK_VALUES = 1 << 22  # values generated at a time: bounds the float32 scratch to 16 MiB


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters that decide a decoder's size and speed."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float
    rms_eps: float
    tied_embeddings: bool

    def __post_init__(self) -> None:
        if self.architecture not in _BIASED_ATTENTION:
            raise ValueError(
                f"cannot build a {self.architecture!r} model; supported architectures: "
                + ", ".join(sorted(_BIASED_ATTENTION))
            )
        if min(self.n_layer, self.n_embd, self.n_head, self.n_head_kv, self.n_ff) <= 0:
            raise ValueError(f"every dimension must be positive: {self}")
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError(
                f"n_embd ({self.n_embd}) must divide into n_head ({self.n_head}) heads, and "
                f"n_head into n_head_kv ({self.n_head_kv}) groups"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def n_params(self, n_vocab: int) -> int:
        """Parameters of a model of this shape with an `n_vocab`-token vocabulary."""
        return sum(int(np.prod(spec.shape)) for spec in _tensor_plan(self, n_vocab))


QWEN2_5_0_5B = ModelShape("qwen2", 24, 896, 14, 2, 4864, 32768, 1000000.0, 1e-6, True)


@dataclass(frozen=True)
class _TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: rows last-to-first of ggml's ne
    kind: Literal["weight", "norm", "bias"]


def _tensor_plan(shape: ModelShape, n_vocab: int) -> list[_TensorSpec]:
    """llama.cpp's tensor names and shapes for a llama-style decoder (numpy row-major order)."""
    n_q = shape.n_head * shape.head_dim
    n_kv = shape.n_head_kv * shape.head_dim
    plan = [_TensorSpec("token_embd.weight", (n_vocab, shape.n_embd), "weight")]
    for index in range(shape.n_layer):
        block = f"blk.{index}"
        plan += [
            _TensorSpec(f"{block}.attn_norm.weight", (shape.n_embd,), "norm"),
            _TensorSpec(f"{block}.attn_q.weight", (n_q, shape.n_embd), "weight"),
            _TensorSpec(f"{block}.attn_k.weight", (n_kv, shape.n_embd), "weight"),
            _TensorSpec(f"{block}.attn_v.weight", (n_kv, shape.n_embd), "weight"),
        ]
        if _BIASED_ATTENTION[shape.architecture]:
            plan += [
                _TensorSpec(f"{block}.attn_q.bias", (n_q,), "bias"),
                _TensorSpec(f"{block}.attn_k.bias", (n_kv,), "bias"),
                _TensorSpec(f"{block}.attn_v.bias", (n_kv,), "bias"),
            ]
        plan += [
            _TensorSpec(f"{block}.attn_output.weight", (shape.n_embd, n_q), "weight"),
            _TensorSpec(f"{block}.ffn_norm.weight", (shape.n_embd,), "norm"),
            _TensorSpec(f"{block}.ffn_gate.weight", (shape.n_ff, shape.n_embd), "weight"),
            _TensorSpec(f"{block}.ffn_up.weight", (shape.n_ff, shape.n_embd), "weight"),
            _TensorSpec(f"{block}.ffn_down.weight", (shape.n_embd, shape.n_ff), "weight"),
        ]
    plan.append(_TensorSpec("output_norm.weight", (shape.n_embd,), "norm"))
    if not shape.tied_embeddings:  # tied: llama.cpp reuses token_embd as the output matrix
        plan.append(_TensorSpec("output.weight", (n_vocab, shape.n_embd), "weight"))
    return plan


def _dtype_for(spec: _TensorSpec, weight_dtype: type[np.floating[Any]]) -> type[np.floating[Any]]:
    # 1-D tensors stay F32, as llama.cpp's converter writes them: norms and biases are tiny.
    return weight_dtype if spec.kind == "weight" else np.float32


def _values(
    spec: _TensorSpec, dtype: type[np.floating[Any]], rng: np.random.Generator
) -> npt.NDArray[Any]:
    if spec.kind == "norm":
        return np.ones(spec.shape, dtype=dtype)
    # Filled in chunks straight into the target dtype, so an F16 matrix never needs a
    # full-size float32 (or float64) copy next to it.
    out = np.empty(spec.shape, dtype=dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _CHUNK_VALUES):
        chunk = rng.standard_normal(min(_CHUNK_VALUES, flat.size - start), dtype=np.float32)
        chunk *= _WEIGHT_SCALE
        flat[start : start + chunk.size] = chunk
    return out


def _add_hyperparameters(writer: gguf.GGUFWriter, shape: ModelShape, n_vocab: int) -> None:
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_vocab_size(n_vocab)


def _write(
    writer: gguf.GGUFWriter,
    path: Path,
    plan: list[_TensorSpec],
    weight_dtype: type[np.floating[Any]],
    seed: int,
) -> Path:
    """Declare every tensor, then generate and write them one at a time.

    Only one tensor is in memory at once (the writer's default keeps all of them until the
    end), and the file appears under its name only when complete.
    """
    for spec in plan:
        dtype = np.dtype(_dtype_for(spec, weight_dtype))
        n_bytes = int(np.prod(spec.shape)) * dtype.itemsize
        writer.add_tensor_info(spec.name, spec.shape, dtype, n_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    rng = np.random.default_rng(seed)
    try:
        writer.write_header_to_file(partial)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for spec in plan:
            writer.write_tensor_data(_values(spec, _dtype_for(spec, weight_dtype), rng))
        writer.close()
        partial.replace(path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%d tensors, %d bytes)", path, len(plan), path.stat().st_size)
    return path


# --- a tiny chat model ----------------------------------------------------------------------
def _byte_vocabulary() -> tuple[list[str], list[int]]:
    """SentencePiece-style: every byte is a token, so any text tokenises (one token per byte)."""
    types = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"]
    kinds = [types.UNKNOWN, types.CONTROL, types.CONTROL]
    tokens += [f"<0x{value:02X}>" for value in range(256)]
    kinds += [types.BYTE] * 256
    # "▁" is SentencePiece's space: without it a space would only exist as the byte <0x20>,
    # and the tokenizer's leading-space handling would have nothing to map to.
    tokens += ["\u2581", "<|im_start|>", "<|im_end|>"]
    kinds += [types.NORMAL, types.CONTROL, types.CONTROL]
    return tokens, [int(kind) for kind in kinds]


def build_tiny_chat_model(
    path: Path,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_ctx_train: int = 2048,
    seed: int = 0,
) -> Path:
    """A tiny llama with random F32 weights, a byte-level vocabulary and a ChatML template.

    Its text is gibberish, but it loads, tokenises chats through a real template (with
    <|im_start|> / <|im_end|> as special tokens) and generates: enough for engine tests.
    """
    shape = ModelShape(
        "llama", n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx_train, 10000.0, 1e-5, False
    )
    tokens, kinds = _byte_vocabulary()
    writer = gguf.GGUFWriter(None, shape.architecture)
    writer.add_name("hoshikage-tiny-chat")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_hyperparameters(writer, shape, len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(kinds)
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(tokens.index("</s>"))
    # EOS stays </s>; <|im_end|> ends a chat turn, which llama.cpp treats as end of generation.
    writer.add_eot_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # Otherwise llama.cpp puts a "▁" after every special token: "<|im_start|> user".
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    return _write(writer, path, _tensor_plan(shape, len(tokens)), np.float32, seed)


# --- a realistic shape with a real tokenizer ------------------------------------------------
class _PlainArrayReader(gguf.GGUFReader):
    """GGUFReader over a plain array instead of np.memmap.

    Every memmap slice runs Python bookkeeping, and the reader slices once per vocabulary
    string: on Qwen2's 151,936 tokens and merges that takes 12 s, against 2 s this way.
    """

    @property  # type: ignore[override]
    def data(self) -> npt.NDArray[np.uint8]:
        return self._plain

    @data.setter
    def data(self, value: npt.NDArray[np.uint8]) -> None:
        self._plain = np.asarray(value)


def _tokenizer_fields(vocab_gguf: Path) -> Iterator[tuple[str, Any, gguf.GGUFValueType, Any]]:
    """(key, value, type, sub-type) for every tokenizer.* key, with its original GGUF types."""
    reader = _PlainArrayReader(vocab_gguf)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main_type = field.types[0]
        if main_type == gguf.GGUFValueType.ARRAY:
            if len(field.types) != 2:
                raise ValueError(f"{vocab_gguf}: nested array {key} is not supported")
            sub_type = field.types[1]
            if sub_type == gguf.GGUFValueType.STRING:
                # Raw bytes, not decoded text: copied exactly, whatever the encoding.
                value: Any = [bytes(field.parts[index]) for index in field.data]
            else:
                value = field.contents()
            yield key, value, main_type, sub_type
        elif main_type == gguf.GGUFValueType.STRING:
            yield key, bytes(field.parts[-1]), main_type, None
        else:
            yield key, field.contents(), main_type, None


def build_random_model_like(
    path: Path, vocab_gguf: Path, shape: ModelShape, *, seed: int = 0
) -> Path:
    """A random-weight F16 model of `shape`, with the tokenizer and chat template of a GGUF.

    `vocab_gguf` is usually a vocabulary-only file (llama.cpp's ggml-vocab-*.gguf); every
    tokenizer.* key is copied with its original types, and the embedding matrices are sized
    to its vocabulary.
    """
    fields = list(_tokenizer_fields(vocab_gguf))
    n_vocab = next((len(value) for key, value, *_ in fields if key == gguf.Keys.Tokenizer.LIST), 0)
    if not n_vocab:
        raise ValueError(f"{vocab_gguf} has no {gguf.Keys.Tokenizer.LIST} to copy")
    writer = gguf.GGUFWriter(None, shape.architecture)
    writer.add_name(
        f"hoshikage-random-{shape.architecture}-{shape.n_layer}x{shape.n_embd}-{vocab_gguf.stem}"
    )
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _add_hyperparameters(writer, shape, n_vocab)
    for key, value, value_type, sub_type in fields:
        writer.add_key_value(key, value, value_type, sub_type)
    return _write(writer, path, _tensor_plan(shape, n_vocab), np.float16, seed)
