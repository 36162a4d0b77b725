"""Recognising model file formats, and refusing anything but GGUF with a way forward."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from hoshikage.engine.formats import require_gguf, sniff_format
from hoshikage.engine.types import EngineError, UnsupportedFormatError


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def safetensors_bytes() -> bytes:
    header = json.dumps({"weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 8


def test_real_gguf_files(shared_models: Path, vocab_dir: Path) -> None:
    assert sniff_format(shared_models / "stories260K.gguf") == "gguf"
    assert sniff_format(vocab_dir / "ggml-vocab-qwen2.gguf") == "gguf"


def test_gguf_magic_whatever_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "model.bin", b"GGUF" + struct.pack("<I", 3) + b"\x00" * 16)
    assert sniff_format(path) == "gguf"


def test_safetensors_by_header(tmp_path: Path) -> None:
    assert sniff_format(write(tmp_path / "model.weights", safetensors_bytes())) == "safetensors"


def test_safetensors_by_suffix(tmp_path: Path) -> None:
    assert sniff_format(write(tmp_path / "model.safetensors", b"")) == "safetensors"


def test_zip_pytorch_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": [1.0, 2.0]}))
    assert sniff_format(path) == "PyTorch checkpoint"


def test_legacy_pickle_checkpoint(tmp_path: Path) -> None:
    path = write(tmp_path / "model.ckpt", pickle.dumps({"state_dict": {}}, protocol=2))
    assert sniff_format(path) == "PyTorch checkpoint"


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pytorch_by_suffix(tmp_path: Path, suffix: str) -> None:
    assert sniff_format(write(tmp_path / f"model{suffix}", b"\x01\x02")) == "PyTorch checkpoint"


def test_onnx(tmp_path: Path) -> None:
    # An ONNX file is a protobuf ModelProto: field 1 (ir_version) comes first.
    path = write(tmp_path / "model.onnx", b"\x08\x07\x12\x07pytorch\x1a\x032.1")
    assert sniff_format(path) == "ONNX"


@pytest.mark.parametrize("magic", [b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt"])
def test_legacy_ggml(tmp_path: Path, magic: bytes) -> None:
    path = write(tmp_path / "ggml-model-q4_0.bin", magic + b"\x01\x00\x00\x00" + b"\x00" * 8)
    assert sniff_format(path) == "legacy GGML"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.txt", b"hello, this is not a model"),
        ("empty.gguf", b""),
        ("short.gguf", b"GGU"),
        ("config.json", b'{"architectures": ["LlamaForCausalLM"]}'),
    ],
)
def test_unknown(tmp_path: Path, name: str, data: bytes) -> None:
    assert sniff_format(write(tmp_path / name, data)) == "unknown"


# --- require_gguf -----------------------------------------------------------------------------


def test_require_gguf_accepts_a_real_gguf(stories_model: Path) -> None:
    require_gguf(stories_model)


def test_require_gguf_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(EngineError, match="does not exist") as caught:
        require_gguf(missing)
    assert str(missing) in str(caught.value)
    assert not isinstance(caught.value, UnsupportedFormatError)


def test_require_gguf_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="is a directory") as caught:
        require_gguf(tmp_path)
    assert ".gguf file inside it" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("model.safetensors", safetensors_bytes(), "safetensors"),
        ("model.ckpt", pickle.dumps({}), "PyTorch checkpoint"),
        ("model.onnx", b"\x08\x07", "ONNX"),
        ("ggml-model.bin", b"tjgg" + b"\x00" * 12, "legacy GGML"),
    ],
)
def test_require_gguf_names_the_format(tmp_path: Path, name: str, data: bytes, kind: str) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(UnsupportedFormatError) as caught:
        require_gguf(path)
    message = str(caught.value)
    assert f"is a {kind} file, not GGUF" in message
    assert str(path) in message
    assert "GGUF" in message
    assert "convert_hf_to_gguf.py" in message


def test_require_gguf_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path / "model.gguf", b"definitely not a model")
    with pytest.raises(UnsupportedFormatError) as caught:
        require_gguf(path)
    message = str(caught.value)
    assert "is not a GGUF model file" in message
    assert "GGUF build of the model" in message


def test_unsupported_format_is_an_engine_error() -> None:
    assert issubclass(UnsupportedFormatError, EngineError)
