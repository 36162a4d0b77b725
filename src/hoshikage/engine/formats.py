"""Recognise model file formats, so that anything but GGUF is refused with a way forward."""

from __future__ import annotations

import struct
from pathlib import Path

from hoshikage.engine.types import EngineError, UnsupportedFormatError

GGUF_MAGIC = b"GGUF"

_HOW_TO_GET_GGUF = (
    "Hoshikage loads GGUF files only. Download a GGUF build of the model (most models on "
    "Hugging Face have one: search for '<model name> GGUF'), or convert it with llama.cpp's "
    "convert_hf_to_gguf.py and quantise it with llama-quantize."
)


def sniff_format(path: Path) -> str:
    """Name the format of a model file from its first bytes and its suffix."""
    with path.open("rb") as handle:
        head = handle.read(16)
    suffix = path.suffix.lower()
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt"):
        return "legacy GGML"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "PyTorch checkpoint"
    if suffix == ".safetensors" or _looks_like_safetensors(head):
        return "safetensors"
    if suffix == ".onnx":
        return "ONNX"
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return "PyTorch checkpoint"
    return "unknown"


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len < 100_000_000 and head[8:9] == b"{"


def require_gguf(path: Path) -> None:
    """Raise a clear error unless path is a readable GGUF file."""
    if not path.exists():
        raise EngineError(f"model file {path} does not exist")
    if path.is_dir():
        raise EngineError(f"{path} is a directory; give the path of a .gguf file inside it")
    try:
        kind = sniff_format(path)
    except OSError as exc:
        raise EngineError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if kind == "gguf":
        return
    if kind == "unknown":
        raise UnsupportedFormatError(f"{path} is not a GGUF model file. {_HOW_TO_GET_GGUF}")
    raise UnsupportedFormatError(f"{path} is a {kind} file, not GGUF. {_HOW_TO_GET_GGUF}")
