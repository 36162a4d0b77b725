"""The `hoshikage` command line: version, help, settings errors, model errors, bench, pipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hoshikage import __version__
from hoshikage.cli.app import app
from tests.cli.terminal import chat_args, child_env, one_line, run_hoshikage

runner = CliRunner()
COMMAND_NAMES = sorted(typer.main.get_group(app).commands)


def assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output, output


# --- version and help ------------------------------------------------------------------------


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hoshikage {__version__}"


def test_version_as_a_program(isolated_env: Path) -> None:
    result = run_hoshikage(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"hoshikage {__version__}"


def test_commands_are_chat_and_bench() -> None:
    assert {"chat", "bench"} <= set(COMMAND_NAMES)


def test_app_help() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Usage: hoshikage" in result.output
    for name in COMMAND_NAMES:
        assert name in result.output


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_command_help(name: str) -> None:
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"Usage: hoshikage {name}" in result.output
    for parameter in typer.main.get_group(app).commands[name].params:
        assert parameter.opts[0] in result.output  # every option is documented
    assert_no_traceback(result.output)


def test_no_arguments_shows_help(isolated_env: Path) -> None:
    result = run_hoshikage([])
    assert re.search(r"Usage: (python -m )?hoshikage \[OPTIONS\] COMMAND", result.stdout)
    assert all(name in result.stdout for name in COMMAND_NAMES)
    assert_no_traceback(result.stdout + result.stderr)


# --- settings errors: exit 2, name the key and the value -----------------------------------


@pytest.mark.parametrize("command", ["chat", "bench"])
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("env-temperature", "invalid setting temperature = '9': Input should be less than or"),
        ("flag-backend", "invalid setting backend = 'tpu': Input should be 'auto', 'cpu'"),
        ("file-unknown-key", "unknown setting 'bogus_key' (value 3)"),
        ("file-bad-value", "invalid setting n_ctx = -5: Input should be greater than or equal"),
        ("file-not-toml", "cannot read config file"),
    ],
)
def test_bad_setting_exits_2_naming_key_and_value(
    isolated_env: Path, stories_model: Path, command: str, case: str, expected: str
) -> None:
    config = isolated_env / "config.toml"
    args = [command, "-m", str(stories_model)]
    env = child_env()
    if case == "env-temperature":  # bench checks every setting too
        env["HOSHIKAGE_TEMPERATURE"] = "9"
    elif case == "flag-backend":
        args += ["--backend", "tpu"]
    elif case == "file-unknown-key":
        config.write_text("bogus_key = 3\n", encoding="utf-8")
    elif case == "file-bad-value":
        config.write_text("n_ctx = -5\n", encoding="utf-8")
    else:
        config.write_text("this is = not = toml\n", encoding="utf-8")
    result = run_hoshikage(args, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert_no_traceback(output)
    message = one_line(result.stdout)
    assert message.startswith("error: ")
    assert expected in message


def test_a_config_flag_naming_a_missing_file_exits_2(
    isolated_env: Path, stories_model: Path
) -> None:
    missing = isolated_env / "nowhere.toml"
    result = run_hoshikage(["chat", "-m", str(stories_model), "--config", str(missing)])
    assert result.returncode == 2
    assert f"config file {missing} does not exist" in one_line(result.stdout)
    assert_no_traceback(result.stdout + result.stderr)


def test_unknown_preset_exits_2(isolated_env: Path, stories_model: Path) -> None:
    result = run_hoshikage(["chat", "-m", str(stories_model), "--preset", "nope"])
    assert result.returncode == 2
    assert "unknown preset 'nope'" in one_line(result.stdout)


# --- model errors: exit 1 with a clear message -----------------------------------------------


@pytest.mark.parametrize("command", ["chat", "bench"])
def test_missing_model_exits_1(isolated_env: Path, command: str) -> None:
    missing = isolated_env / "nope.gguf"
    result = run_hoshikage([command, "-m", str(missing)])
    assert result.returncode == 1
    message = one_line(result.stdout)
    assert message.startswith(f"error: no model '{missing}': it is neither a file, an alias nor")
    assert_no_traceback(result.stdout + result.stderr)


def test_bench_with_no_model_says_which_to_name(isolated_env: Path) -> None:
    # chat and serve fall back to the starter model (tests/cli/test_first_run.py); bench
    # measures only a model it is given, and names the ones it could be given.
    result = run_hoshikage(["bench"])
    assert result.returncode == 1
    assert one_line(result.stdout).startswith("error: no model given: pass --model NAME with one")
    assert_no_traceback(result.stdout + result.stderr)


@pytest.mark.parametrize("command", ["chat", "bench"])
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "model.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}',
            "is a safetensors file, not GGUF",
        ),
        ("notes.gguf", b"just some text, not a model\n", "is not a GGUF model file"),
    ],
    ids=["safetensors", "text"],
)
def test_non_gguf_file_exits_1(
    isolated_env: Path, command: str, name: str, content: bytes, expected: str
) -> None:
    path = isolated_env / name
    path.write_bytes(content)
    result = run_hoshikage([command, "-m", str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    message = one_line(result.stdout)
    assert message.startswith(f"error: {path}")
    assert expected in message
    assert "GGUF files only" in message
    assert_no_traceback(output)


# --- bench -----------------------------------------------------------------------------------

BENCH_ARGS = ["--repetitions", "1", "--prompt-tokens", "32", "--gen-tokens", "16", "--threads", "1"]


def test_bench_json(isolated_env: Path, stories_model: Path) -> None:
    result = run_hoshikage(["bench", "-m", str(stories_model), "--json", *BENCH_ARGS])
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == str(stories_model)
    assert report["backend"] == "cpu"
    assert (report["prompt_tokens"], report["gen_tokens"], report["repetitions"]) == (32, 16, 1)
    for key in ("load_s", "time_to_first_token_s", "prefill_tokens_per_s", "decode_tokens_per_s"):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert isinstance(report["peak_rss_bytes"], int) and report["peak_rss_bytes"] > 0
    assert report["decode_tokens_per_s_stdev"] == 0.0  # one repetition


def test_bench_table(isolated_env: Path, stories_model: Path) -> None:
    result = run_hoshikage(["bench", "-m", str(stories_model), *BENCH_ARGS], env=child_env())
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "hoshikage bench · stories260K.gguf" in output
    assert "cpu (GPU layers 0)" in output
    for row in ("load time", "time to first token (pp32)", "prefill (pp32)", "decode (tg16)"):
        assert row in output
    assert output.count("tok/s") == 2
    assert "peak RSS" in output and "MiB" in output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--n-ctx", "32"], "the context window holds 32 tokens"),
        # n_ctx 0 means the model's training context, too small for this prompt.
        (["--n-ctx", "0", "--prompt-tokens", "100000"], "the context window holds"),
    ],
    ids=["setting", "training-context"],
)
def test_bench_with_too_small_a_context_is_a_clear_error(
    isolated_env: Path, stories_model: Path, args: list[str], expected: str
) -> None:
    result = run_hoshikage(["bench", "-m", str(stories_model), *BENCH_ARGS, *args])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    message = one_line(result.stdout)
    assert message.startswith(f"error: {expected}")
    assert "raise --n-ctx" in message
    assert_no_traceback(output)


# --- piped chat ------------------------------------------------------------------------------


def test_piped_chat_answers_and_exits_at_eof(isolated_env: Path, stories_model: Path) -> None:
    result = run_hoshikage(["chat", *chat_args(stories_model)], stdin="Once upon a time\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_traceback(result.stdout + result.stderr)
    answer = result.stdout.split("Assistant> ", 1)[1]
    assert "Lily" in answer
    assert "ERROR" not in result.stderr


def test_piped_chat_runs_commands_and_multiline_blocks(
    isolated_env: Path, stories_model: Path
) -> None:
    script = 'Once upon a time\n/stats\n"""\nOne day\nLily went out."""\n/sessions\n/bogus\n'
    result = run_hoshikage(["chat", *chat_args(stories_model)], stdin=script)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert output.count("Assistant> ") == 2
    assert "completion tokens" in output and "tok/s" in output
    assert "Unknown command /bogus." in output
    assert "│ 4 " in output  # /sessions: one session with four messages
    assert_no_traceback(output + result.stderr)


def test_piped_chat_ends_at_exit_command(isolated_env: Path, stories_model: Path) -> None:
    script = "/exit\nOnce upon a time\n"
    result = run_hoshikage(["chat", *chat_args(stories_model)], stdin=script)
    assert result.returncode == 0
    assert "Assistant> " not in result.stdout
