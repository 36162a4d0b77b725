"""What a GGUF file says about itself, read from its header without loading any weights.

`gguf.GGUFReader` parses every vocabulary string into numpy views (seconds on a 150k-token
vocabulary); this reader walks the header with `struct` over a memory map and skips long arrays,
so even large models are described in well under a second and no tensor data is touched.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

# Architectures llama.cpp runs as encoders that produce embeddings rather than text.
EMBEDDING_ARCHITECTURES = frozenset(
    {
        "bert",
        "modern-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "gemma-embedding",
    }
)

_SHORT_ARRAY = 16  # arrays up to this long are kept in the metadata (tags, languages …)
_MAX_DIMS = 8
_GUESSED_FILE_TYPE = 1024  # llama.cpp ORs this into general.file_type when it guessed it

# GGUF value types with a fixed size: struct format of one item.
_FIXED: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}


class GgufError(ValueError):
    """The file is not a GGUF this reader can make sense of; the message says why."""


@dataclass(frozen=True)
class TensorSummary:
    name: str
    shape: tuple[int, ...]
    type_name: str
    n_elements: int


@dataclass(frozen=True)
class GgufInfo:
    """The header of a GGUF file: metadata (scalars and short arrays) and tensor shapes."""

    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorSummary, ...] = field(repr=False)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def parameters(self) -> int:
        return sum(tensor.n_elements for tensor in self.tensors)

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def quantization(self) -> str | None:
        """The file type as llama.cpp names it (Q4_K_M, Q8_0, F16 …)."""
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and not isinstance(file_type, bool):
            return quantization_name(file_type)
        return self._dominant_tensor_type()

    @property
    def is_embedding_model(self) -> bool:
        arch = self.architecture
        return arch in EMBEDDING_ARCHITECTURES or f"{arch}.pooling_type" in self.metadata

    def _dominant_tensor_type(self) -> str | None:
        # Files written without general.file_type (older converters, tiny test models): the
        # type holding most weight elements is what the user would call the quantisation.
        totals: dict[str, int] = {}
        for tensor in self.tensors:
            if len(tensor.shape) >= 2:
                totals[tensor.type_name] = totals.get(tensor.type_name, 0) + tensor.n_elements
        return max(totals, key=totals.__getitem__) if totals else None


def quantization_name(file_type: int) -> str:
    """llama.cpp's LLAMA_FTYPE number as a name: 15 -> Q4_K_M, 1 -> F16; unknown -> "ftype 99"."""
    try:
        name = gguf.LlamaFileType(file_type & ~_GUESSED_FILE_TYPE).name
    except ValueError:
        return f"ftype {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def parameter_label(count: int | None) -> str | None:
    """A parameter count the way model cards write it: 292.8K, 22.6M, 7.6B."""
    if not count:
        return None
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.1f}".removesuffix(".0") + suffix
    return str(count)


def read_gguf_info(path: Path) -> GgufInfo:
    """Parse the header of a GGUF file; GgufError if it is not one or is cut short."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise GgufError(f"{path} is too short to be a GGUF file ({size} bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _Parser(buffer, path).parse()
    except OSError as exc:
        raise GgufError(f"cannot read {path}: {exc.strerror or exc}") from exc


class _Parser:
    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.pos = 0
        self.endian = "<"

    def parse(self) -> GgufInfo:
        if self.buffer[:4] != b"GGUF":
            raise GgufError(f"{self.path} does not start with the GGUF magic bytes")
        (version,) = struct.unpack_from("<I", self.buffer, 4)
        if version & 0xFFFF == 0:  # written on a big-endian machine
            self.endian = ">"
            (version,) = struct.unpack_from(">I", self.buffer, 4)
        if version not in (2, 3):
            raise GgufError(
                f"{self.path} is GGUF version {version}; only versions 2 and 3 are supported "
                "(re-convert it with a current llama.cpp)"
            )
        self.pos = 8
        n_tensors = self._read("Q")
        n_kv = self._read("Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            value_type = self._read("I")
            value, kept = self._value(value_type, keep=True)
            if kept:
                metadata[key] = value
        tensors, data_end = self._tensors(n_tensors)
        if not data_end:  # no tensor data (a vocabulary-only file): nothing to bound
            return GgufInfo(version=version, metadata=metadata, tensors=tuple(tensors))
        alignment = metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GgufError(f"{self.path} has an invalid general.alignment {alignment!r}")
        data_start = -(-self.pos // alignment) * alignment
        needed = data_start + data_end
        if needed > len(self.buffer):
            raise GgufError(
                f"{self.path} is truncated: its tensors need {needed} bytes but the file has "
                f"{len(self.buffer)} (an interrupted download or copy?)"
            )
        return GgufInfo(version=version, metadata=metadata, tensors=tuple(tensors))

    def _tensors(self, count: int) -> tuple[list[TensorSummary], int]:
        tensors = []
        data_end = 0
        for _ in range(count):
            name = self._string()
            n_dims = self._read("I")
            if n_dims > _MAX_DIMS:
                raise self._corrupt(f"tensor {name!r} claims {n_dims} dimensions")
            shape = tuple(self._read("Q") for _ in range(n_dims))
            type_id = self._read("I")
            offset = self._read("Q")
            n_elements = math.prod(shape)
            try:
                quant = gguf.GGMLQuantizationType(type_id)
            except ValueError:
                type_name = f"type {type_id}"  # newer than this gguf package: size unknown
            else:
                type_name = quant.name
                block, type_size = gguf.GGML_QUANT_SIZES[quant]
                data_end = max(data_end, offset + n_elements // block * type_size)
            tensors.append(TensorSummary(name, shape, type_name, n_elements))
        return tensors, data_end

    def _value(self, value_type: int, *, keep: bool) -> tuple[Any, bool]:
        """Read (or skip, when not kept) one value; long arrays are skipped, not kept."""
        if value_type == gguf.GGUFValueType.FLOAT32:
            # The shortest text that is the same float32: 1e-05, not 9.999999747378752e-06.
            return float(str(np.float32(self._read("f")))), True
        if value_type in _FIXED:
            return self._read(_FIXED[value_type]), True
        if value_type == gguf.GGUFValueType.STRING:
            if keep:
                return self._string(), True
            self._advance(self._read("Q"))
            return None, False
        if value_type == gguf.GGUFValueType.ARRAY:
            item_type = self._read("I")
            count = self._read("Q")
            keep_items = keep and count <= _SHORT_ARRAY
            if item_type in _FIXED and not keep_items:
                self._advance(count * struct.calcsize(_FIXED[item_type]))
                return None, False
            if item_type == gguf.GGUFValueType.STRING and not keep_items:
                self._skip_strings(count)
                return None, False
            items = [self._value(item_type, keep=keep_items)[0] for _ in range(count)]
            return (items if keep_items else None), keep_items
        raise self._corrupt(f"unknown value type {value_type}")

    def _read(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._need(size)
        (value,) = struct.unpack_from(self.endian + fmt, self.buffer, self.pos)
        self.pos += size
        return value

    def _string_bytes(self) -> bytes:
        length = self._read("Q")
        self._need(length)
        raw = self.buffer[self.pos : self.pos + length]
        self.pos += length
        return raw

    def _string(self) -> str:
        return self._string_bytes().decode("utf-8", errors="replace")

    def _skip_strings(self, count: int) -> None:
        # The hot loop of a vocabulary (150k tokens and as many merges): kept to one unpack
        # per string, with the bounds checked once at the end and by unpack_from itself.
        unpack = struct.Struct(self.endian + "Q").unpack_from
        buffer, pos = self.buffer, self.pos
        try:
            for _ in range(count):
                pos += 8 + unpack(buffer, pos)[0]
        except struct.error:
            raise self._corrupt("a string array runs past the end of the file") from None
        self.pos = pos
        self._need(0)

    def _advance(self, count: int) -> None:
        self._need(count)
        self.pos += count

    def _need(self, count: int) -> None:
        if self.pos + count > len(self.buffer):
            raise self._corrupt("the header runs past the end of the file")

    def _corrupt(self, reason: str) -> GgufError:
        return GgufError(f"{self.path} is not a readable GGUF file: {reason} (at byte {self.pos})")


_KV_BYTES_PER_ELEMENT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def estimate_memory_bytes(
    path: Path, n_ctx: int, kv_cache_type: str = "f16", n_slots: int = 1
) -> int:
    """What loading costs, before loading: weights plus a KV cache of n_ctx for each slot.

    Reads only the GGUF header, so it is cheap enough to run before deciding whether a model
    fits. n_ctx 0 means the model's training context. Compute buffers get a 10% margin.
    """
    info = read_gguf_info(path)
    arch = info.architecture or "llama"

    def number(key: str, default: int = 0) -> int:
        value = info.metadata.get(f"{arch}.{key}")
        if isinstance(value, (list, tuple)):  # per-layer head counts: the largest bounds it
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) else default

    n_layer, n_embd = number("block_count"), number("embedding_length")
    n_head = number("attention.head_count", 1) or 1
    n_head_kv = number("attention.head_count_kv", n_head) or n_head
    head_k = number("attention.key_length", n_embd // n_head)
    head_v = number("attention.value_length", n_embd // n_head)
    trained = number("context_length", n_ctx)
    context = min(n_ctx, trained) if n_ctx else trained
    per_element = _KV_BYTES_PER_ELEMENT.get(kv_cache_type, 1.0)
    kv_bytes = n_slots * n_layer * context * n_head_kv * (head_k + head_v) * per_element
    return int((path.stat().st_size + kv_bytes) * 1.1)
