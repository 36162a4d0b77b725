"""`hoshikage models …` through Typer's runner, on an isolated data directory."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hoshikage.cli.models_cmd import models_app
from tests.models.fake_hub import FakeHub

REPO = "tiny-owner/TinyStories-260K-GGUF"
STORIES_SHA256 = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"


Cli = Callable[..., Result]


@pytest.fixture
def cli(isolated_env: Path) -> Iterator[Cli]:
    """Run `hoshikage models ARGS`; never a traceback, whatever happens."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        result = runner.invoke(models_app, list(args), env={"COLUMNS": "200"})
        assert "Traceback" not in result.output, result.output
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), result.exception
        return result

    yield invoke
    # Each command points the log handlers at the runner's streams; do not leak them.
    root = logging.getLogger("hoshikage")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def last_error_line(result: Result) -> str:
    """A pull prints its steps, then exactly one error line."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.output
    return lines[-1]


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_add_ls_show_rm(cli: Cli, stories_model: Path, shared_models: Path) -> None:
    added = cli("add", str(stories_model), "stories", "--keep-alive", "5m")
    assert added.exit_code == 0, added.output
    assert "Added model stories" in added.output
    minilm = shared_models / "all-MiniLM-L6-v2-q8_0.gguf"
    added = cli("add", str(minilm), "minilm")
    assert "Added embedding model minilm" in added.output

    listing = cli("ls")
    assert listing.exit_code == 0
    header, *rows = listing.output.strip().splitlines()
    assert header.split() == ["NAME", "SIZE", "QUANT", "CONTEXT", "PARAMS", "EMBEDDING"]
    assert rows[0].split() == ["minilm", "24.1", "MiB", "Q8_0", "512", "23M", "yes"]
    assert rows[1].split() == ["stories", "1.1", "MiB", "F32", "2048", "292.8K", "no"]

    shown = cli("show", "stories:latest")
    assert shown.exit_code == 0
    for text in (STORIES_SHA256, "llama", "2048", "292.8K (292,800)", "300 s", "local"):
        assert text in shown.output
    assert "llama.block_count" in shown.output  # the GGUF metadata

    removed = cli("rm", "stories")
    assert removed.exit_code == 0 and "Removed stories" in removed.output
    assert stories_model.exists()
    assert "stories" not in cli("ls").output


def test_json_output(cli: Cli, stories_model: Path) -> None:
    cli("add", str(stories_model), "stories")
    [listed] = json.loads(cli("ls", "--json").output)
    shown = json.loads(cli("show", "stories", "--json").output)
    assert listed == shown
    assert shown["digest"] == f"sha256:{STORIES_SHA256}"
    assert shown["path"] == str(stories_model.resolve())  # the registry stores real paths


def test_empty_list_says_how_to_add(cli: Cli) -> None:
    result = cli("ls")
    assert result.exit_code == 0
    assert "hoshikage models add" in result.output


def test_add_refusals_are_one_line(cli: Cli, tmp_path: Path, stories_model: Path) -> None:
    assert "does not exist" in one_error_line(cli("add", str(tmp_path / "x.gguf"), "x"))
    assert "is a directory" in one_error_line(cli("add", str(tmp_path), "x"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x10\0\0\0\0\0\0\0{}" + b" " * 14)
    assert "safetensors" in one_error_line(cli("add", str(weights), "x"))
    assert "invalid model name" in one_error_line(cli("add", str(stories_model), "A B"))
    cli("add", str(stories_model), "stories")
    assert "already taken" in one_error_line(cli("add", str(stories_model), "stories"))
    replaced = cli("add", str(stories_model), "stories", "--replace", "--embedding")
    assert "Added embedding model" in replaced.output


def test_bad_keep_alive_is_a_usage_error(cli: Cli, stories_model: Path) -> None:
    result = cli("add", str(stories_model), "x", "--keep-alive", "soon")
    assert result.exit_code == 2
    assert "not a duration" in result.output


def test_unknown_model_errors(cli: Cli) -> None:
    for command in (["show", "nope"], ["rm", "nope"], ["verify", "nope"], ["cp", "nope", "b"]):
        assert "unknown model 'nope'" in one_error_line(cli(*command))


def test_verify(cli: Cli, stories_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stories.gguf"
    shutil.copyfile(stories_model, copy)
    cli("add", str(copy), "stories")
    result = cli("verify", "stories")
    assert result.exit_code == 0 and "sha256" in result.output and "matches" in result.output
    with copy.open("r+b") as handle:
        handle.seek(1_000_000)
        handle.write(b"\xff\xff")
    assert "does not match" in one_error_line(cli("verify", "stories"))


def test_cp_and_keep_alive(cli: Cli, stories_model: Path) -> None:
    cli("add", str(stories_model), "stories")
    copied = cli("cp", "stories", "story:copy")
    assert copied.exit_code == 0 and "Copied stories to story:copy" in copied.output
    assert "already taken" in one_error_line(cli("cp", "stories", "story:copy"))
    kept = cli("keep-alive", "story:copy", "-1")
    assert kept.exit_code == 0 and "forever" in kept.output
    assert "forever" in cli("show", "story:copy").output
    assert "default" in cli("keep-alive", "story:copy", "default").output


def test_pull_and_rm_deletes_the_pulled_file(
    cli: Cli, stories_model: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    with FakeHub() as hub:
        hub.add_file(REPO, "TinyStories-260K-Q8_0.gguf", stories_model.read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        result = cli("pull", f"{REPO}:Q8_0", "--name", "tiny")
        assert result.exit_code == 0, result.output
        assert "pulling manifest" in result.output
        assert "verifying sha256 digest" in result.output
        assert "Pulled tiny" in result.output
        pulled = isolated_env / "data" / "models" / "tiny-owner--TinyStories-260K-GGUF"
        assert (pulled / "TinyStories-260K-Q8_0.gguf").is_file()

        failed = cli("pull", f"{REPO}:Q2_K")
        assert "no file matches 'Q2_K'" in last_error_line(failed)
        assert "no repository" in last_error_line(cli("pull", "no/such-GGUF:Q8_0"))
        assert "cannot read" in one_error_line(cli("pull", "nonsense"))

    removed = cli("rm", "tiny")
    assert removed.exit_code == 0 and "deleted" in removed.output
    assert not pulled.exists()


def test_help_lists_every_command(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("add", "rm", "ls", "show", "verify", "pull", "cp", "keep-alive"):
        assert command in result.output
