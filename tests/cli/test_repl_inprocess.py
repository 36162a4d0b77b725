"""The REPL in process, fed from a string: checks that need to look inside its state."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from hoshikage.cli.input import PipeReader
from hoshikage.cli.repl import ChatRepl
from hoshikage.config import load_settings
from hoshikage.runtime import open_sessions


def run_repl(script: str, stories_model: Path, tmp_path: Path) -> tuple[ChatRepl, str]:
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    settings = load_settings(
        model=str(stories_model),
        config_file=tmp_path / "none.toml",
        data_dir=tmp_path / "data",
        n_ctx=256,
        temperature=0.0,
        max_tokens=8,
    )
    output = io.StringIO()
    repl = ChatRepl(
        settings,
        open_sessions(settings),
        Console(file=output, width=200),
        PipeReader(io.StringIO(script)),
    )
    engines = []
    original_run_command = repl.run_command

    def spy(line: str) -> bool:
        engines.append(repl.engine)
        return original_run_command(line)

    repl.run_command = spy  # type: ignore[method-assign]
    assert repl.run() == 0
    repl.engines_seen = engines  # type: ignore[attr-defined]
    return repl, output.getvalue()


def test_a_refused_backend_keeps_the_loaded_model(stories_model: Path, tmp_path: Path) -> None:
    repl, output = run_repl("/backend hybrid\n/backend cuda\n/status\n", stories_model, tmp_path)
    first, second, third = repl.engines_seen  # type: ignore[attr-defined]
    assert first is second is third  # refused before unloading: no reload happened
    assert "gpu_layers" in output
    assert "not available" in output
    assert "Loaded" in output and output.count("Loaded") == 1


def test_a_bad_model_path_keeps_the_loaded_model(stories_model: Path, tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.safetensors"
    not_gguf.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 16)
    repl, output = run_repl(f"/model {not_gguf}\nOnce upon a time\n", stories_model, tmp_path)
    assert repl.engines_seen[0] is not None  # type: ignore[attr-defined]
    assert "safetensors" in output
    assert output.count("Loaded") == 1
    assert "Assistant> " in output
