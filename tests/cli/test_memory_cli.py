"""`hoshikage memory search|list|forget|export|reindex` as a user runs them: subprocesses over
an isolated data directory, whose memories the tests write first through the Python API (in
keyword mode, as the terminal chat does without an embedding model)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hoshikage.config import load_settings
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.setup import memory_bank
from hoshikage.store import Database, NewMessage, SessionStore
from tests.cli.terminal import child_env, one_line, run_hoshikage

CAT_FACT = "My cat is called Tama."
KEY_FACT = "The spare key is under the blue flowerpot."
OTHER_NAMESPACE = "key:0123456789abcdef"


@dataclass
class Store:
    """The isolated data directory's store, opened in this process (keyword mode)."""

    database: Database
    sessions: SessionStore
    bank: MemoryBank


@pytest.fixture
def store(isolated_env: Path) -> Iterator[Store]:
    settings = load_settings()
    assert settings.database_path == isolated_env / "data" / "hoshikage.db"
    database = Database(settings.database_path)
    yield Store(database, SessionStore(database), memory_bank(settings, database, None))
    database.close()


@pytest.fixture
def facts(store: Store) -> dict[str, int]:
    """Three facts of the local user and one of another namespace; their ids by text."""
    ids = {
        text: store.bank.add_fact("local", text).id
        for text in (CAT_FACT, KEY_FACT, "Tea is best without sugar.")
    }
    ids["other"] = store.bank.add_fact(OTHER_NAMESPACE, "A fact of another API key.").id
    return ids


@pytest.fixture
def minilm(shared_models: Path) -> Path:
    return shared_models / "all-MiniLM-L6-v2-q8_0.gguf"


def memory(*args: str, **env: str) -> tuple[int, str]:
    """Run `hoshikage memory ARGS`; its exit code and everything it printed."""
    result = run_hoshikage(["memory", *args], env=child_env(**env))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.returncode, output


def memory_json(*args: str, **env: str) -> Any:
    code, output = memory(*args, "--json", **env)
    assert code == 0, output
    return json.loads(output)


# --- list --------------------------------------------------------------------------------------
def test_list_with_no_memories(store: Store) -> None:
    code, output = memory("list")
    assert code == 0
    assert one_line(output) == "No memories in namespace local."


def test_list_shows_the_namespaces_memories_newest_first(facts: dict[str, int]) -> None:
    code, output = memory("list")
    assert code == 0, output
    assert CAT_FACT in output and KEY_FACT in output
    assert "A fact of another API key." not in output
    assert f"Other namespaces: {OTHER_NAMESPACE}" in one_line(output)
    listed = memory_json("list")
    assert [item["text"] for item in listed] == [
        "Tea is best without sugar.",
        KEY_FACT,
        CAT_FACT,
    ]
    assert all(item["role"] == "fact" and item["namespace"] == "local" for item in listed)
    assert [item["id"] for item in memory_json("list", "--limit", "1")] == [
        facts["Tea is best without sugar."]
    ]
    (other,) = memory_json("list", "--namespace", OTHER_NAMESPACE)
    assert other["id"] == facts["other"]


# --- search ------------------------------------------------------------------------------------
def test_search_by_keywords(facts: dict[str, int]) -> None:
    code, output = memory("search", "What is my cat's name?")
    assert code == 0, output
    assert CAT_FACT in output and KEY_FACT not in output
    assert "keyword search" in output
    result = memory_json("search", "What is my cat's name?")
    assert result["mode"] == "keyword"
    best = result["data"][0]
    assert best["id"] == facts[CAT_FACT] and best["text"] == CAT_FACT
    assert best["keyword"] == 0.5 and best["similarity"] is None  # "cat" of "cat", "name"
    assert best["score"] == best["keyword"]
    # Another namespace's facts are not searched unless asked for.
    assert memory_json("search", "another API")["data"] == []
    hits = memory_json("search", "another API", "--namespace", OTHER_NAMESPACE)["data"]
    assert [hit["id"] for hit in hits] == [facts["other"]]


def test_search_finding_nothing(facts: dict[str, int]) -> None:
    code, output = memory("search", "sourdough bread")
    assert code == 0
    assert one_line(output) == "Nothing remembered about that (keyword search)."


def test_search_in_a_session(store: Store, facts: dict[str, int]) -> None:
    session = store.sessions.create(name="pets")
    store.sessions.append(
        session.id, [NewMessage("user", "My dog is called Pochi."), NewMessage("assistant", "Ok.")]
    )
    assert store.bank.catch_up() == 2
    hits = memory_json("search", "dog", "--session", "pets")["data"]
    assert [hit["text"] for hit in hits] == ["My dog is called Pochi."]
    assert hits[0]["session_id"] == session.id and hits[0]["role"] == "user"
    code, output = memory("search", "dog", "--session", "nope")
    assert code == 1
    assert one_line(output).startswith("error: no saved session named 'nope'")


# --- forget ------------------------------------------------------------------------------------
def test_forget_by_id(facts: dict[str, int]) -> None:
    code, output = memory("forget", str(facts[CAT_FACT]))
    assert code == 0, output
    assert one_line(output) == "Forgot 1 memories."
    assert CAT_FACT not in [item["text"] for item in memory_json("list")]
    assert memory_json("search", "cat")["data"] == []
    # Gone already, or of another namespace: said (exit 1, as rm), and nothing else touched.
    code, output = memory("forget", str(facts[CAT_FACT]), str(facts["other"]))
    assert code == 1
    assert f"no memory {min(facts[CAT_FACT], facts['other'])}, " in one_line(output)
    assert one_line(output).endswith("Forgot 0 memories.")
    assert len(memory_json("list", "--namespace", OTHER_NAMESPACE)) == 1


def test_forget_with_nothing_to_forget_is_a_usage_error(store: Store) -> None:
    code, output = memory("forget")
    assert code == 2
    assert one_line(output) == "error: say what to forget: memory ids, --session NAME, or --all"


@pytest.mark.parametrize("args", [["forget", str(10**20)], ["list", "--limit", str(10**20)]])
def test_numbers_beyond_sqlites_range_are_usage_errors(
    facts: dict[str, int], args: list[str]
) -> None:
    code, output = memory(*args)
    assert code == 2, output
    assert "Invalid value for" in output and str(2**63 - 1) in output
    assert len(memory_json("list")) == 3


def test_forget_a_session_and_everything(store: Store, facts: dict[str, int]) -> None:
    session = store.sessions.create(name="pets")
    store.sessions.append(
        session.id, [NewMessage("user", "My dog is called Pochi."), NewMessage("assistant", "Ok.")]
    )
    store.bank.catch_up()
    code, output = memory("forget", "--session", "pets")
    assert code == 0, output
    assert one_line(output) == "Forgot 2 memories."
    assert "My dog is called Pochi." not in [item["text"] for item in memory_json("list")]
    assert len(store.sessions.messages(session.id)) == 2  # the conversation itself stays
    assert store.bank.catch_up() == 0  # and is never remembered again

    code, output = memory("forget", "--all")
    assert code == 0
    assert one_line(output) == "Forgot 3 memories."
    assert memory_json("list") == []
    assert len(memory_json("list", "--namespace", OTHER_NAMESPACE)) == 1


# --- export ------------------------------------------------------------------------------------
def test_export_to_a_file(isolated_env: Path, facts: dict[str, int]) -> None:
    target = isolated_env / "memories.json"
    code, output = memory("export", "-o", str(target))
    assert code == 0, output
    assert one_line(output) == f"Exported 4 memories to {target}."
    document = json.loads(target.read_text(encoding="utf-8"))
    assert document["format"] == "hoshikage-memory" and document["version"] == 1
    assert document["embedding_model"] is None
    by_text = {item["text"]: item for item in document["memories"]}
    assert set(by_text) == {
        CAT_FACT,
        KEY_FACT,
        "Tea is best without sugar.",
        "A fact of another API key.",
    }
    cat = by_text[CAT_FACT]
    assert cat["id"] == facts[CAT_FACT] and cat["namespace"] == "local"
    assert cat["role"] == "fact" and cat["importance"] == 1.0 and cat["created_at"] > 0
    assert "embedding" not in cat  # texts, not vectors


def test_export_one_namespace_to_stdout(facts: dict[str, int]) -> None:
    code, output = memory("export", "--namespace", OTHER_NAMESPACE)
    assert code == 0, output
    document = json.loads(output)
    assert [item["text"] for item in document["memories"]] == ["A fact of another API key."]


def test_export_to_a_file_that_cannot_be_written(isolated_env: Path, facts: dict[str, int]) -> None:
    target = isolated_env / "no-such-dir" / "memories.json"
    code, output = memory("export", "-o", str(target))
    assert code == 1
    assert one_line(output).startswith(f"error: cannot write {target}")


# --- reindex -----------------------------------------------------------------------------------
def test_reindex_without_an_embedding_model(facts: dict[str, int]) -> None:
    code, output = memory("reindex")
    assert code == 1
    assert one_line(output) == "error: no embedding_model is configured: nothing to embed with"


def test_reindex_with_a_missing_embedding_model(isolated_env: Path, store: Store) -> None:
    missing = isolated_env / "nope.gguf"
    code, output = memory("reindex", HOSHIKAGE_EMBEDDING_MODEL=str(missing))
    assert code == 1
    assert one_line(output).startswith(f"error: embedding_model: no model '{missing}'")


def test_reindex_embeds_keyword_memories_then_search_finds_by_meaning(
    store: Store, facts: dict[str, int], minilm: Path
) -> None:
    # A conversation stored by the terminal chat, never remembered (no indexer ran).
    session = store.sessions.create(name="hobbies")
    store.sessions.append(
        session.id,
        [NewMessage("user", "I play the violin every evening."), NewMessage("assistant", "Nice.")],
    )
    # By keywords, words the memories do not hold find nothing.
    assert memory_json("search", "feline")["data"] == []
    semantic = {"HOSHIKAGE_EMBEDDING_MODEL": str(minilm)}

    code, output = memory("reindex", **semantic)
    assert code == 0, output
    line = one_line(output)
    # The 4 facts; the 2 messages were embedded as they were remembered.
    assert line.startswith("Embedded 4 memories with MiniLM")
    assert line.endswith("remembered 2 stored messages that were not yet.")

    result = memory_json("search", "feline", "--limit", "2", **semantic)
    assert result["mode"] == "semantic"
    best = result["data"][0]
    assert best["id"] == facts[CAT_FACT]
    assert best["keyword"] == 0.0 and best["similarity"] > 0.4
    assert best["embedding_model"].startswith("MiniLM")
    music = memory_json("search", "Which instrument do I practise?", "--limit", "1", **semantic)
    assert music["data"][0]["text"] == "I play the violin every evening."
    assert music["data"][0]["session_id"] == session.id
    # Everything is in the model's space now: a second reindex has nothing to do.
    code, output = memory("reindex", **semantic)
    assert code == 0
    assert one_line(output).startswith("Embedded 0 memories with MiniLM")
    # And export says which model the memories are embedded with.
    document = json.loads(memory("export")[1])
    assert {item["embedding_model"] for item in document["memories"]} == {best["embedding_model"]}
