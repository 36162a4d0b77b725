"""The terminal chat under a pseudo-terminal: prompt, streamed answers, every slash command,
multi-line input, Ctrl+C and Ctrl+D, with real llama.cpp inference on stories260K."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from hoshikage.cli.commands import COMMANDS
from hoshikage.cli.memory_commands import MEMORY_COMMANDS
from hoshikage.conversation.presets import PresetBook
from hoshikage.store import SessionStore
from tests.cli.conftest import SpawnChat
from tests.cli.terminal import ANSWER, PROMPT, READY, Chat, chat_args, one_line

OpenStore = Callable[[], SessionStore]


def start(spawn_chat: SpawnChat, model: Path, *extra: str, max_tokens: int | None = 20) -> Chat:
    """A greedy chat on `model`, waiting at its first prompt."""
    chat = spawn_chat(*chat_args(model, *extra, max_tokens=max_tokens))
    banner = chat.wait_prompt()
    assert "Loaded llama" in banner
    assert "Type /help for commands" in banner
    return chat


def hint(output: str) -> str:
    """The output of a command that should answer with exactly one line."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line hint, got:\n{output}"
    return lines[0]


def table_cells(output: str, row: str) -> list[str]:
    """The cells after the label of a Rich table row (the first row with that label)."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) > 1 and cells[0] == row:
            return cells[1:]
    raise AssertionError(f"no row {row!r} in:\n{output}")


def table_value(output: str, row: str) -> str:
    """The value cell of a two-column Rich table row."""
    return table_cells(output, row)[0]


def only_session_messages(store: SessionStore) -> list[tuple[str, str]]:
    (session,) = store.recent()
    return [(message.role, message.content) for message in store.messages(session.id)]


# --- prompt and answers ----------------------------------------------------------------------


def test_streams_a_greedy_answer_then_stats_and_status(
    spawn_chat: SpawnChat, stories_model: Path
) -> None:
    chat = start(spawn_chat, stories_model, max_tokens=30)
    answer = chat.ask("Once upon a time")
    assert "Lily" in answer
    assert f"{PROMPT}Once upon a time" in chat.text  # the prompt as shown, with the input

    stats = chat.command("/stats")
    assert table_cells(stats, "completion tokens") == ["30", "30"]
    assert int(table_value(stats, "prompt tokens (reused from cache)").split()[0]) > 0
    for speed in [*table_cells(stats, "decode speed"), table_value(stats, "prefill speed")]:
        assert re.fullmatch(r"\d+\.\d tok/s", speed)
        assert float(speed.split()[0]) > 0
    assert table_value(stats, "finish reason") == "length"

    status = chat.command("/status")
    assert str(stories_model) in table_value(status, "model")
    assert table_value(status, "backend").startswith("cpu")
    assert re.fullmatch(r"\d+ / 512 tokens in the KV cache", table_value(status, "context"))
    assert re.fullmatch(r"\d+(\.\d+)? MiB", table_value(status, "process memory"))
    assert "(2 messages)" in table_value(status, "session")

    assert chat.quit() == 0


def test_stats_before_any_answer(spawn_chat: SpawnChat, stories_model: Path) -> None:
    chat = start(spawn_chat, stories_model)
    assert hint(chat.command("/stats")) == "No answers yet in this conversation."
    status = chat.command("/status")
    assert table_value(status, "session") == "new (saved after the first answer)"
    assert chat.quit() == 0


# --- commands --------------------------------------------------------------------------------


def test_help_lists_every_command(spawn_chat: SpawnChat, stories_model: Path) -> None:
    chat = start(spawn_chat, stories_model)
    output = chat.command("/help")
    for command in (*COMMANDS, *MEMORY_COMMANDS):
        assert re.search(
            rf"^{re.escape(command.usage)}\s+{re.escape(command.summary)}", output, re.M
        )
    assert "Esc then Enter" in output
    assert chat.quit() == 0


def test_unknown_commands_give_a_hint(spawn_chat: SpawnChat, stories_model: Path) -> None:
    chat = start(spawn_chat, stories_model)
    assert hint(chat.command("/bogus")) == "Unknown command /bogus. Type /help for the list."
    assert "Did you mean /save?" in hint(chat.command("/sav"))
    assert "Unknown command /." in hint(chat.command("/"))
    assert "Lily" in chat.ask("Once upon a time")  # still chatting
    assert chat.quit() == 0


def test_params_and_set(spawn_chat: SpawnChat, stories_model: Path) -> None:
    chat = start(spawn_chat, stories_model)
    params = chat.command("/params")
    assert table_value(params, "temperature") == "0.0"
    assert table_value(params, "max_tokens") == "20"
    assert table_value(params, "seed") == "default"

    assert hint(chat.command("/set temperature 0.2")) == "temperature = 0.2"
    assert hint(chat.command("/set seed 42")) == "seed = 42"
    assert hint(chat.command("/set stop ###")) == "stop = ['###']"
    params = chat.command("/params")
    assert table_value(params, "temperature") == "0.2"
    assert table_value(params, "seed") == "42"
    assert table_value(params, "stop") == "['###']"

    bad = hint(chat.command("/set temperature abc"))
    assert bad.startswith("invalid value 'abc' for temperature:")
    assert "less than or equal to 5" in hint(chat.command("/set temperature 9"))
    assert "invalid value '[oops' for stop" in hint(chat.command("/set stop [oops"))
    unknown = hint(chat.command("/set nonsense 1"))
    assert unknown.startswith("Unknown parameter 'nonsense'; one of: temperature")
    assert hint(chat.command("/set top_k")).startswith("Usage: /set <parameter> <value>")
    # Bad values change nothing.
    assert table_value(chat.command("/params"), "temperature") == "0.2"

    assert hint(chat.command("/set seed none")) == "seed = None"
    assert chat.quit() == 0


def test_system_prompt_and_presets(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    presets = PresetBook({})
    chat = start(spawn_chat, stories_model)

    listing = chat.command("/system")
    assert f"System prompt: {presets.get('default').system_prompt}" in one_line(listing)
    for preset in presets.all():
        assert preset.name in listing
    assert re.search(r"│ default \*", listing)  # the current one is marked

    assert hint(chat.command("/system Tell a short story.")) == "System prompt set (custom)."
    assert "System prompt: Tell a short story." in chat.command("/system")

    listing = chat.command("/preset")
    assert all(preset.name in listing for preset in presets.all())
    assert "step-by-step explanations" in listing

    assert hint(chat.command("/preset teacher")) == "System prompt set (preset teacher)."
    teacher = presets.get("teacher").system_prompt
    assert f"System prompt: {teacher}" in one_line(chat.command("/system"))
    assert re.search(r"│ teacher \*", chat.command("/preset"))
    assert hint(chat.command("/preset nope")).startswith("unknown preset 'nope'")

    chat.ask("Once upon a time")
    (session,) = open_store().recent()
    assert session.system_prompt == teacher

    assert hint(chat.command("/system none")) == "System prompt set (cleared)."
    assert "System prompt: (none)" in chat.command("/system")
    assert open_store().recent()[0].system_prompt is None
    assert chat.quit() == 0


def test_save_sessions_clear_and_load(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    chat = start(spawn_chat, stories_model)
    assert hint(chat.command("/sessions")) == "No saved sessions yet."
    first = chat.ask("Once upon a time")

    assert hint(chat.command("/save story")).startswith("Session saved as story")
    listing = chat.command("/sessions")
    assert re.search(r"│ story \*\s*│ [\d-]+ [\d:]+\s*│ 2\s*│", listing)

    cleared = hint(chat.command("/clear"))
    assert cleared == "Started a new conversation (the previous one is saved as story)."
    assert table_value(chat.command("/status"), "session") == "new (saved after the first answer)"
    assert "Lily" in chat.ask("Once upon a time")
    assert len(open_store().recent()) == 2

    loaded = chat.command("/load story")
    assert "Resumed story: 2 messages." in loaded
    assert f"{PROMPT}Once upon a time" in loaded  # the last exchange is shown again
    assert f"{ANSWER}{first}" in one_line(loaded)
    assert table_value(chat.command("/status"), "session") == "story (2 messages)"

    chat.ask("What did Lily do?")
    store = open_store()
    story = store.find("story")
    assert story.message_count == 4
    assert [m.role for m in store.messages(story.id)] == ["user", "assistant"] * 2
    assert "no saved session named 'nope'" in hint(chat.command("/load nope"))
    assert hint(chat.command("/load")).startswith("Usage: /load")
    assert hint(chat.command("/save story")).startswith("Session saved as story")  # itself
    chat.command("/clear")
    taken = hint(chat.command("/save story"))
    assert taken == "a session named 'story' already exists; pick another name"
    assert chat.quit() == 0


def test_model_switching_keeps_the_chat_working(
    spawn_chat: SpawnChat, stories_model: Path, tmp_path: Path
) -> None:
    chat = start(spawn_chat, stories_model)
    assert hint(chat.command("/model")) == f"Model: {stories_model}"

    reloaded = chat.command(f"/model {stories_model}")
    assert "Loaded llama (llama, 5 layers) on cpu" in reloaded

    missing = hint(chat.command("/model nonexistent"))
    assert missing.startswith("no model 'nonexistent': it is neither a file, an alias nor a")
    assert "Lily" in chat.ask("Once upon a time")

    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}')
    output = one_line(chat.command(f"/model {fake}"))
    assert "is a safetensors file, not GGUF" in output
    assert "Loading" not in output  # refused before the loaded model was given up
    assert hint(chat.command("/model")) == f"Model: {stories_model}"
    assert chat.ask("Once upon a time")
    assert chat.quit() == 0


def _has_cuda() -> bool:
    from hoshikage.engine.backend import gpu_devices

    return any(device.backend.lower() == "cuda" for device in gpu_devices())


def test_backend_switching(spawn_chat: SpawnChat, stories_model: Path) -> None:
    chat = start(spawn_chat, stories_model)
    assert "Loaded llama (llama, 5 layers) on cpu" in chat.command("/backend cpu")
    assert table_value(chat.command("/status"), "backend") == "cpu (GPU layers: 0)"

    if not _has_cuda():
        output = one_line(chat.command("/backend cuda"))
        assert "backend 'cuda' is not available: this llama.cpp build has CPU only" in output
        assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install' in output
        assert "Loading" not in output  # refused before the loaded model was given up
        assert table_value(chat.command("/status"), "backend") == "cpu (GPU layers: 0)"
        assert "Lily" in chat.ask("Once upon a time")

    assert "invalid value 'tpu' for backend" in hint(chat.command("/backend tpu"))
    assert hint(chat.command("/backend")).startswith("Usage: /backend")
    assert "set gpu_layers" in one_line(chat.command("/backend hybrid"))
    assert chat.ask("Once upon a time")
    assert chat.quit() == 0


# --- leaving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["/exit\r", "/quit\r", "\x04"], ids=["exit", "quit", "ctrl-d"])
def test_exit_with_code_zero(spawn_chat: SpawnChat, stories_model: Path, keys: str) -> None:
    chat = start(spawn_chat, stories_model)
    assert chat.quit(keys) == 0


def test_ctrl_c_at_the_prompt_does_not_exit(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    chat = start(spawn_chat, stories_model)
    chat.send("\x03")
    chat.wait_prompt()
    chat.send("half a line")  # ^C drops what was typed
    chat.expect("half a line")
    chat.send("\x03")
    chat.wait_prompt()
    assert chat.child.isalive()
    assert "Lily" in chat.ask("Once upon a time")
    assert only_session_messages(open_store())[0] == ("user", "Once upon a time")
    assert chat.quit() == 0


def test_ctrl_c_stops_an_answer(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    # Sampled, no max_tokens, a 2048-token context: this answer runs for seconds.
    chat = spawn_chat(
        "-m", str(stories_model), "--n-ctx", "2048", "--temperature", "0.8",
        "--repeat-penalty", "1.3", "--seed", "1", "--threads", "1",
    )  # fmt: skip
    chat.wait_prompt()
    chat.submit("Once upon a time")
    chat.expect(re.escape(ANSWER))
    chat.send("\x03")
    chat.expect(r"\(stopped\)\n")
    chat.wait_prompt()
    assert chat.child.isalive()

    stats = chat.command("/stats")
    assert table_value(stats, "finish reason") == "cancelled"
    completion = int(table_value(stats, "completion tokens"))
    assert 0 < completion < 2048 - 100
    store = open_store()
    (session,) = store.recent()
    question, answer = store.messages(session.id)
    assert question.content == "Once upon a time"
    assert answer.finish_reason == "cancelled"
    assert answer.completion_tokens == completion
    # What was shown is what is kept. The terminal echoes ^C where it came and drops output
    # it had not yet passed on, so compare what came before the ^C and what came after it.
    shown = chat.text.split(ANSWER, 1)[1].split("(stopped)", 1)[0]
    before, _, after = shown.partition("^C")
    assert answer.content.strip()
    assert answer.content.strip().startswith(before.strip())
    assert after.strip() in answer.content  # nothing shown twice, nothing not stored

    assert chat.quit() == 0


# --- multi-line input ------------------------------------------------------------------------


def test_multiline_with_a_fenced_block(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    chat = start(spawn_chat, stories_model)
    chat.submit('"""')
    chat.expect(re.escape(READY + "..."))
    chat.submit("Once upon a time")
    chat.expect(re.escape(READY + "..."))
    chat.submit('there was a cat."""')
    assert ANSWER in chat.wait_prompt()
    assert only_session_messages(open_store())[0] == ("user", "Once upon a time\nthere was a cat.")
    assert chat.quit() == 0


def test_multiline_with_escape_enter(
    spawn_chat: SpawnChat, stories_model: Path, open_store: OpenStore
) -> None:
    chat = start(spawn_chat, stories_model)
    chat.send("Once upon a time\x1b\r")  # Esc, Enter: a new line, not send
    chat.send("there was a dog.")
    chat.expect("there was a dog")
    assert open_store().recent() == []  # nothing sent yet
    chat.submit("")
    answer = chat.wait_prompt()
    assert ANSWER in answer
    assert only_session_messages(open_store())[0] == ("user", "Once upon a time\nthere was a dog.")
    assert chat.quit() == 0
