"""A loaded GGUF model: weights, vocabulary and metadata (the context lives in the scheduler)."""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from pathlib import Path

import llama_cpp

from hoshikage.engine.amx_probe import amx_is_broken
from hoshikage.engine.backend import init_backend
from hoshikage.engine.formats import require_gguf
from hoshikage.engine.types import EngineError

log = logging.getLogger(__name__)


def _load_mode(use_mmap: bool, use_mlock: bool) -> int:
    if use_mmap and use_mlock:
        return int(llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK)
    if use_mlock:
        return int(llama_cpp.LLAMA_LOAD_MODE_MLOCK)
    if use_mmap:
        return int(llama_cpp.LLAMA_LOAD_MODE_MMAP)
    return int(llama_cpp.LLAMA_LOAD_MODE_NONE)


class LlamaModel:
    """Owns a llama_model. Tokenising is read-only on the vocabulary and safe from any thread."""

    def __init__(
        self,
        path: Path,
        *,
        n_gpu_layers: int = 0,
        use_mmap: bool = True,
        use_mlock: bool = False,
        vocab_only: bool = False,
    ) -> None:
        require_gguf(path)
        init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.load_mode = _load_mode(use_mmap, use_mlock)
        params.vocab_only = vocab_only
        # Extra buffer types (weight repacking, AMX) are llama.cpp's fast CPU paths; they are
        # turned off only where AMX would crash the process.
        params.use_extra_bufts = vocab_only or not amx_is_broken()
        started = time.perf_counter()
        pointer = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not pointer:
            raise EngineError(
                f"llama.cpp could not load {path}: the file may be damaged, truncated, or use "
                f"an architecture this llama.cpp build does not know (run with "
                f"--log-level debug to see llama.cpp's reason)"
            )
        self.load_seconds = time.perf_counter() - started
        self.path = path
        self.pointer = pointer
        self.vocab = llama_cpp.llama_model_get_vocab(pointer)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.bos_id = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos_id = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.n_gpu_layers = n_gpu_layers
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            llama_cpp.llama_model_free(self.pointer)

    # --- metadata ----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buffer = ctypes.create_string_buffer(4096)
        length = llama_cpp.llama_model_meta_val_str(self.pointer, key.encode(), buffer, 4096)
        if length < 0:
            return None
        if length >= 4096:  # long value (e.g. a chat template): ask again with room for it
            buffer = ctypes.create_string_buffer(length + 1)
            llama_cpp.llama_model_meta_val_str(self.pointer, key.encode(), buffer, length + 1)
        return buffer.value.decode("utf-8", errors="replace")

    def metadata(self) -> dict[str, str]:
        """Every scalar metadata key (arrays such as the vocabulary are summarised by llama.cpp)."""
        result = {}
        buffer = ctypes.create_string_buffer(256)
        for index in range(llama_cpp.llama_model_meta_count(self.pointer)):
            llama_cpp.llama_model_meta_key_by_index(self.pointer, index, buffer, 256)
            key = buffer.value.decode("utf-8", errors="replace")
            value = self.meta(key)
            if value is not None:
                result[key] = value
        return result

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.pointer, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    @property
    def n_ctx_train(self) -> int:
        return int(llama_cpp.llama_model_n_ctx_train(self.pointer))

    @property
    def n_layer(self) -> int:
        return int(llama_cpp.llama_model_n_layer(self.pointer))

    @property
    def n_params(self) -> int:
        return int(llama_cpp.llama_model_n_params(self.pointer))

    @property
    def size_bytes(self) -> int:
        return int(llama_cpp.llama_model_size(self.pointer))

    @property
    def description(self) -> str:
        buffer = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.pointer, buffer, 256)
        return buffer.value.decode("utf-8", errors="replace")

    # --- tokens ------------------------------------------------------------------------
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the API refuses these at its edge
            raise EngineError("the text is not valid Unicode (it holds a lone surrogate)") from None
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), tokens, capacity, add_special, parse_special
        )
        if count < 0:  # more tokens than bytes: only possible with odd vocabularies
            capacity = -count
            tokens = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), tokens, capacity, add_special, parse_special
            )
        ids = list(tokens[:count])
        if len(ids) >= 2 and ids[0] == ids[1] == self.bos_id and self.add_bos:
            ids = ids[1:]  # the template already wrote a BOS; llama.cpp added another
        return ids

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, -length, 0, special)
        return buffer.raw[:length]

    def token_text(self, token: int) -> str:
        """A token's text with special tokens written out (for BOS/EOS in templates)."""
        if token < 0:
            return ""
        return self.token_bytes(token, special=True).decode("utf-8", errors="replace")

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(token) for token in tokens).decode(
            "utf-8", errors="replace"
        )

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    @functools.cached_property
    def end_of_generation_tokens(self) -> tuple[int, ...]:
        """Every token that ends generation (EOS, EOT, <|im_end|> …), found once per model."""
        return tuple(token for token in range(self.n_vocab) if self.is_end_of_generation(token))
