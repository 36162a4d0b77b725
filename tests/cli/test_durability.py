"""What survives: a kill -9 after a turn, JSON history files, and resuming a session."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from hoshikage.store import SessionStore
from tests.cli.conftest import SpawnChat
from tests.cli.terminal import PROMPT, Chat, chat_args, one_line, run_hoshikage

OpenStore = Callable[[], SessionStore]


def start(spawn_chat: SpawnChat, model: Path, *extra: str) -> tuple[Chat, str]:
    """A greedy chat waiting at its first prompt, and what it printed before it."""
    chat = spawn_chat(*chat_args(model, *extra))
    return chat, chat.wait_prompt()


def prompt_tokens_shown(chat: Chat) -> int:
    stats = chat.command("/stats")
    match = re.search(r"prompt tokens \(reused from cache\)\s*│\s*(\d+)", stats)
    assert match is not None, stats
    return int(match.group(1))


def test_sigkill_after_a_turn_keeps_the_turn(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    chat, _ = start(spawn_chat, stories_model)
    answer = chat.ask("Once upon a time")  # returns once the next prompt is shown
    os.kill(chat.child.pid, signal.SIGKILL)
    assert chat.wait_exit() == -signal.SIGKILL

    store = open_store()
    (session,) = store.recent()
    assert session.model == str(stories_model)
    question, stored = store.messages(session.id)
    assert (question.role, question.content) == ("user", "Once upon a time")
    assert stored.role == "assistant"
    assert "Lily" in stored.content
    assert one_line(stored.content) == one_line(answer)
    assert stored.finish_reason == "length"
    assert stored.completion_tokens == 20
    assert stored.prompt_tokens is not None and stored.prompt_tokens > 0
    assert stored.total_s is not None and stored.total_s > 0


def test_save_history_is_written_after_each_turn(
    spawn_chat: SpawnChat, stories_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "exports" / "story.json"
    chat, _ = start(spawn_chat, stories_model, "--save-history", str(path))
    assert not path.exists()  # nothing to save before the first turn

    first = chat.ask("Once upon a time")
    document = json.loads(path.read_text(encoding="utf-8"))  # the chat is still running
    assert document["format"] == "hoshikage-session"
    assert document["model"] == str(stories_model)
    assert [m["role"] for m in document["messages"]] == ["user", "assistant"]
    assert document["messages"][0]["content"] == "Once upon a time"
    assert one_line(document["messages"][1]["content"]) == one_line(first)
    assert document["messages"][1]["finish_reason"] == "length"
    assert document["messages"][1]["completion_tokens"] == 20

    chat.ask("What did Lily do next?")
    document = json.loads(path.read_text(encoding="utf-8"))
    assert len(document["messages"]) == 4
    assert document["messages"][2]["content"] == "What did Lily do next?"
    assert not path.with_name(path.name + ".tmp").exists()
    assert chat.quit() == 0


def test_save_history_that_cannot_be_written_does_not_end_the_chat(
    stories_model: Path, isolated_env: Path, open_store: OpenStore
) -> None:
    blocker = isolated_env / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    result = run_hoshikage(
        ["chat", *chat_args(stories_model, "--save-history", str(blocker / "story.json"))],
        stdin="Once upon a time\nHello\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "cannot write the history file" in one_line(result.stdout)
    assert result.stdout.count("Assistant> ") == 2  # the chat went on
    (session,) = open_store().recent()
    assert session.message_count == 4  # and every turn is in the store


def _history_file(path: Path, name: str | None = "imported") -> Path:
    document = {
        "format": "hoshikage-session",
        "version": 1,
        "name": name,
        "system_prompt": "You tell short stories for children.",
        "params": {"temperature": 0.0, "max_tokens": 20},
        "messages": [
            {"role": "user", "content": "Tell me about a little girl named Lily and her dog."},
            {"role": "assistant", "content": "Lily had a big brown dog called Max."},
        ],
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_load_history_continues_the_session(
    spawn_chat: SpawnChat, stories_model: Path, tmp_path: Path, open_store: OpenStore
) -> None:
    history = _history_file(tmp_path / "history.json")
    chat, banner = start(spawn_chat, stories_model, "--load-history", str(history))
    assert "Continuing session imported (2 messages)." in banner
    assert "System prompt: You tell short stories for children." in chat.command("/system")

    chat.ask("Once upon a time")
    with_history = prompt_tokens_shown(chat)
    chat.command("/clear")  # the same system prompt, no history
    chat.ask("Once upon a time")
    without_history = prompt_tokens_shown(chat)
    assert with_history > without_history + 10  # the history's ~20 tokens are in the prompt

    store = open_store()
    imported = store.find("imported")
    messages = store.messages(imported.id)
    assert [m.content for m in messages[:3]] == [
        "Tell me about a little girl named Lily and her dog.",
        "Lily had a big brown dog called Max.",
        "Once upon a time",
    ]
    assert messages[3].role == "assistant" and messages[3].prompt_tokens == with_history
    assert chat.quit() == 0


def test_session_flag_resumes_a_saved_session(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    chat, _ = start(spawn_chat, stories_model)
    chat.ask("Once upon a time")
    assert "Session saved as story" in chat.command("/save story")
    first_prompt_tokens = prompt_tokens_shown(chat)
    assert chat.quit() == 0

    chat, banner = start(spawn_chat, stories_model, "--session", "story")
    assert "Continuing session story (2 messages)." in banner
    status = chat.command("/status")
    assert re.search(r"session\s*│\s*story \(2 messages\)", status)
    chat.ask("Once upon a time")
    assert prompt_tokens_shown(chat) > first_prompt_tokens  # the history is in the prompt
    assert chat.quit() == 0

    store = open_store()
    (session,) = store.recent()
    assert session.name == "story"
    assert session.message_count == 4
    assert f"{PROMPT}Once upon a time" in chat.text


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file or directory"),
        (b"{not json", "is not valid JSON"),
        (b'{"messages": [{"role": "robot", "content": "hi"}]}', "is not a session file"),
        (b'"just a string"', "is not a session file"),
        (b"\xff\xfe\x00binary", "is not a session file: not UTF-8 text"),
    ],
    ids=["missing", "not-json", "bad-role", "not-an-object", "binary"],
)
def test_bad_load_history_file_is_a_clear_error(
    stories_model: Path, isolated_env: Path, content: bytes | None, reason: str
) -> None:
    path = isolated_env / "history.json"
    if content is not None:
        path.write_bytes(content)
    result = run_hoshikage(["chat", *chat_args(stories_model, "--load-history", str(path))])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    message = one_line(output)
    assert message.startswith("error:")
    assert str(path) in message
    assert reason in message


def test_unknown_session_is_a_clear_error(stories_model: Path, isolated_env: Path) -> None:
    result = run_hoshikage(["chat", *chat_args(stories_model, "--session", "nope")])
    assert result.returncode == 1
    assert one_line(result.stdout) == "error: no saved session named 'nope' (see /sessions)"
    assert "Traceback" not in result.stdout + result.stderr
