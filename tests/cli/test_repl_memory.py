"""Long-term memory in the terminal chat, driven under a pseudo-terminal: /remember, /recall,
/memory and /forget, a fact recalled in a new conversation, by keywords and by meaning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.conftest import SpawnChat
from tests.cli.terminal import Chat, chat_args, one_line

CAT_FACT = "My cat is called Tama."
CAT_QUESTION = "What is my cat's name?"
FORGET_USAGE = "Usage: /forget <id> [id …] (ids from /recall or /memory)"


def start(spawn_chat: SpawnChat, model: Path, **env: str) -> Chat:
    """A greedy chat with short answers, waiting at its first prompt."""
    chat = spawn_chat(*chat_args(model, max_tokens=8), **env)
    banner = chat.wait_prompt()
    assert "Type /help for commands" in banner
    return chat


def hint(output: str) -> str:
    """The output of a command that should answer with exactly one line."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    return lines[0].strip()


def row_ids(output: str) -> list[int]:
    """The ids in the first column of a Rich table."""
    ids = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) > 1 and cells[0].isdigit():
            ids.append(int(cells[0]))
    return ids


def remember(chat: Chat, text: str) -> int:
    match = re.fullmatch(r"Remembered as #(\d+)\.", hint(chat.command(f"/remember {text}")))
    assert match is not None
    return int(match.group(1))


def test_remember_recall_use_and_forget_by_keywords(
    spawn_chat: SpawnChat, stories_model: Path
) -> None:
    chat = start(spawn_chat, stories_model)
    fact_id = remember(chat, CAT_FACT)
    recalled = chat.command("/recall cat")
    assert CAT_FACT in recalled and fact_id in row_ids(recalled)

    assert hint(chat.command("/clear")).startswith("Started a new conversation")
    chat.ask(CAT_QUESTION)
    report = chat.command("/memory")
    text = one_line(report)
    assert "Memory: keyword search (embedding model: none)" in text
    assert "no embedding_model configured" in text
    assert f"Last answer's context: 0 history messages; memories {fact_id}." in text
    assert CAT_FACT in report and row_ids(report) == [fact_id]

    assert hint(chat.command(f"/forget {fact_id}")) == f"Forgot #{fact_id}."
    assert hint(chat.command("/recall Tama")) == "Nothing remembered about that."
    assert hint(chat.command(f"/forget #{fact_id}")) == f"No memory #{fact_id}."

    # Bad input: a one-line usage hint, and the chat goes on.
    assert hint(chat.command("/forget abc")) == FORGET_USAGE
    assert hint(chat.command("/forget")) == FORGET_USAGE
    assert hint(chat.command("/forget 100000000000000000000")).startswith("No memory #")
    assert hint(chat.command("/remember")).startswith("Usage: /remember <text")
    assert hint(chat.command("/recall")) == "Usage: /recall <what to look for>"
    assert chat.ask("Once upon a time")
    assert chat.quit() == 0


def test_a_fact_is_recalled_by_meaning_in_a_new_conversation(
    spawn_chat: SpawnChat, stories_model: Path, shared_models: Path
) -> None:
    minilm = shared_models / "all-MiniLM-L6-v2-q8_0.gguf"
    chat = start(spawn_chat, stories_model, HOSHIKAGE_EMBEDDING_MODEL=str(minilm))
    fact_id = remember(chat, CAT_FACT)
    remember(chat, "Tea is best without sugar.")
    recalled = chat.command("/recall the name of my pet")
    assert row_ids(recalled)[0] == fact_id  # by meaning: no word in common

    chat.command("/clear")
    chat.ask(CAT_QUESTION)
    report = chat.command("/memory")
    text = one_line(report)
    assert re.search(
        r"Memory: semantic search \(embedding model: MiniLM[^)]*\), \d+ memories", text
    )
    assert f"memories {fact_id}" in text
    assert row_ids(report) == [fact_id]  # the tea is not relevant enough to be used
    score = float(next(line for line in report.splitlines() if CAT_FACT in line).split("│")[2])
    assert score >= 0.25

    assert hint(chat.command(f"/forget {fact_id}")) == f"Forgot #{fact_id}."
    assert fact_id not in row_ids(chat.command("/recall cat"))
    assert chat.quit() == 0


@pytest.mark.parametrize("command", ["/remember x", "/recall x", "/forget 1"])
def test_memory_commands_when_memory_is_off(
    spawn_chat: SpawnChat, stories_model: Path, command: str
) -> None:
    chat = start(spawn_chat, stories_model, HOSHIKAGE_MEMORY="false")
    assert hint(chat.command(command)) == "Memory is off (setting memory = false)."
    report = chat.command("/memory")
    assert (
        one_line(report)
        == "Memory is off (setting memory = false). No answer yet in this conversation."
    )
    assert chat.quit() == 0
