"""Quantising with llama.cpp's quantiser: smaller files that still load, clear errors otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hoshikage.engine import Engine, EngineError, LoadOptions, UnsupportedFormatError
from hoshikage.engine.quantize import FTYPES, quantize_model
from hoshikage.models.synthetic import ModelShape, build_tiny_chat_model

TINY_256 = ModelShape("llama", 2, 256, 4, 2, 512, 2048, 10000.0, 1e-5, False)


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 256-wide rows: k-quants work on blocks of 256, so every matrix can take Q4_K.
    shape = TINY_256
    return build_tiny_chat_model(
        tmp_path_factory.mktemp("quantize") / "tiny-256.gguf",
        n_layer=shape.n_layer,
        n_embd=shape.n_embd,
        n_head=shape.n_head,
        n_head_kv=shape.n_head_kv,
        n_ff=shape.n_ff,
    )


@pytest.mark.parametrize(("ftype", "file_type"), [("Q8_0", 7), ("q4_k_m", 15), ("F16", 1)])
def test_quantised_model_is_smaller_and_loads(
    f32_model: Path, tmp_path: Path, ftype: str, file_type: int
) -> None:
    target = quantize_model(f32_model, tmp_path / f"tiny-{ftype}.gguf", ftype, n_threads=2)
    assert target == tmp_path / f"tiny-{ftype}.gguf"
    assert target.stat().st_size < f32_model.stat().st_size
    assert not list(tmp_path.glob("*.tmp"))
    with Engine(target, LoadOptions(n_ctx=128)) as engine:
        assert engine.info.metadata["general.file_type"] == str(file_type)
        assert engine.info.chat_template_source == "gguf"
        assert engine.info.n_params == TINY_256.n_params(engine.model.n_vocab)


def test_lower_bit_types_give_smaller_files(f32_model: Path, tmp_path: Path) -> None:
    sizes = {
        ftype: quantize_model(f32_model, tmp_path / f"{ftype}.gguf", ftype, 2).stat().st_size
        for ftype in ("F16", "Q8_0", "Q4_0")
    }
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q4_0"]


def test_quantised_model_generates(f32_model: Path, tmp_path: Path) -> None:
    target = quantize_model(f32_model, tmp_path / "tiny-q8.gguf", "Q8_0", n_threads=2)
    # On a CPU whose AMX kernels fault, this crashed until the engine learnt to avoid them.
    # A child process: if llama.cpp crashes, the test fails instead of the test run.
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from hoshikage.engine import Engine, LoadOptions, SamplingParams
        with Engine(Path({str(target)!r}), LoadOptions(n_ctx=128)) as engine:
            finish = engine.complete("Hi", SamplingParams(temperature=0, max_tokens=4)).wait()
            print(finish.usage.completion_tokens)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    assert int(result.stdout.split()[-1]) > 0


def test_unknown_type_lists_the_known_ones(f32_model: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="Q4_K_M") as caught:
        quantize_model(f32_model, tmp_path / "out.gguf", "Q3_Z")
    assert "Q3_Z" in str(caught.value)
    assert all(name in str(caught.value) for name in FTYPES)
    assert not (tmp_path / "out.gguf").exists()


def test_source_must_be_a_gguf(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        quantize_model(tmp_path / "missing.gguf", tmp_path / "out.gguf", "Q8_0")
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UnsupportedFormatError, match="safetensors"):
        quantize_model(fake, tmp_path / "out.gguf", "Q8_0")


def test_llama_cpp_failure_is_an_engine_error_and_leaves_nothing(
    stories_model: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(stories_model.read_bytes()[:1000])
    target = tmp_path / "out.gguf"
    with pytest.raises(EngineError, match="could not quantise"):
        quantize_model(truncated, target, "Q8_0", n_threads=1)
    assert not target.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_refuses_to_overwrite_its_source(f32_model: Path) -> None:
    with pytest.raises(EngineError, match="onto itself"):
        quantize_model(f32_model, f32_model, "Q8_0")
