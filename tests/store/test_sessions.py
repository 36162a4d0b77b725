"""Sessions and messages: create/find/rename/update/list/append/delete, atomicity, durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.store import Database, NewMessage, SessionStore, StoreError


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(tmp_path / "hoshikage.db")
    yield db
    db.close()


@pytest.fixture
def store(database: Database) -> SessionStore:
    return SessionStore(database)


def fixed_ids(monkeypatch: pytest.MonkeyPatch, *hexes: str) -> None:
    """Make the next sessions get these ids (32 hex digits each)."""
    queue = iter([uuid.UUID(value) for value in hexes])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(queue))  # what SessionStore.create calls


def turn(user: str, answer: str) -> list[NewMessage]:
    return [NewMessage("user", user), NewMessage("assistant", answer)]


# --- create and get ---------------------------------------------------------------------------


def test_create_with_defaults(store: SessionStore) -> None:
    record = store.create()
    assert len(record.id) == 32
    assert record.name is None
    assert record.model is None
    assert record.system_prompt is None
    assert record.params == {}
    assert record.message_count == 0
    assert record.created_at == pytest.approx(record.updated_at, abs=1.0)
    assert record.label == record.id[:8]


def test_create_with_everything(store: SessionStore) -> None:
    record = store.create(
        model="/models/tiny.gguf",
        system_prompt="Be brief.",
        params={"temperature": 0.2, "stop": ["###"]},
        name="work",
        created_at=1_700_000_000.5,
    )
    assert record.name == "work"
    assert record.label == "work"
    assert record.model == "/models/tiny.gguf"
    assert record.system_prompt == "Be brief."
    assert record.params == {"temperature": 0.2, "stop": ["###"]}
    assert record.created_at == 1_700_000_000.5
    assert store.get(record.id) == record


def test_create_refuses_a_taken_name(store: SessionStore) -> None:
    store.create(name="work")
    with pytest.raises(StoreError, match="'work' already exists"):
        store.create(name="work")
    assert len(store.recent()) == 1


def test_get_missing_session(store: SessionStore) -> None:
    with pytest.raises(StoreError, match="no session with id nope"):
        store.get("nope")


# --- find ------------------------------------------------------------------------------------


def test_find_by_name_id_and_prefix(store: SessionStore) -> None:
    named = store.create(name="holiday plans")
    other = store.create()
    assert store.find("holiday plans").id == named.id
    assert store.find(named.id).id == named.id
    assert store.find(other.id).id == other.id
    assert store.find(other.id[:8]).id == other.id


def test_find_by_unique_prefix_with_known_ids(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_ids(monkeypatch, "abcd" + "0" * 28, "ef01" + "1" * 28)
    first = store.create()
    second = store.create()
    assert first.id.startswith("abcd")
    assert store.find("abcd").id == first.id
    assert store.find("ef01111").id == second.id


def test_prefix_shorter_than_four_characters_is_not_used(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_ids(monkeypatch, "abcd" + "0" * 28)
    store.create()
    with pytest.raises(StoreError, match="no saved session"):
        store.find("abc")


def test_ambiguous_prefix_is_an_error(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_ids(monkeypatch, "abcd1" + "0" * 27, "abcd2" + "0" * 27)
    store.create()
    second = store.create()
    with pytest.raises(StoreError, match=r"'abcd' matches several sessions; use more of the id"):
        store.find("abcd")
    assert store.find("abcd2").id == second.id


def test_named_looks_up_by_exact_name_only(store: SessionStore) -> None:
    record = store.create(name="diary")
    assert store.named("diary") == record
    assert store.named("dia") is None
    assert store.named(record.id) is None


def test_find_missing_gives_a_hint(store: SessionStore) -> None:
    store.create(name="something")
    with pytest.raises(StoreError) as caught:
        store.find("nothing-like-it")
    message = str(caught.value)
    assert "'nothing-like-it'" in message
    assert "/sessions" in message


# --- rename and update ------------------------------------------------------------------------


def test_rename(store: SessionStore) -> None:
    record = store.create()
    renamed = store.rename(record.id, "new name")
    assert renamed.name == "new name"
    assert store.find("new name").id == record.id


def test_rename_to_its_own_name_is_allowed(store: SessionStore) -> None:
    record = store.create(name="same")
    assert store.rename(record.id, "same").name == "same"


def test_rename_refuses_a_name_clash(store: SessionStore) -> None:
    store.create(name="taken")
    other = store.create(name="mine")
    with pytest.raises(StoreError, match="'taken' already exists; pick another name"):
        store.rename(other.id, "taken")
    assert store.get(other.id).name == "mine"


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_rename_refuses_an_empty_name(store: SessionStore, name: str) -> None:
    record = store.create(name="kept")
    with pytest.raises(StoreError, match="cannot be empty"):
        store.rename(record.id, name)
    assert store.get(record.id).name == "kept"


def test_update_records_model_system_prompt_and_params(store: SessionStore) -> None:
    record = store.create(model="a.gguf", system_prompt="old", params={"top_k": 1})
    store.update(record.id, model="b.gguf", system_prompt="new", params={"top_k": 2})
    updated = store.get(record.id)
    assert updated.model == "b.gguf"
    assert updated.system_prompt == "new"
    assert updated.params == {"top_k": 2}
    assert updated.updated_at >= record.updated_at
    assert updated.created_at == record.created_at


def test_update_keeps_model_and_params_when_not_given(store: SessionStore) -> None:
    record = store.create(model="a.gguf", system_prompt="old", params={"top_k": 1})
    store.update(record.id, system_prompt="new")
    updated = store.get(record.id)
    assert updated.model == "a.gguf"
    assert updated.params == {"top_k": 1}
    assert updated.system_prompt == "new"


# --- recent -------------------------------------------------------------------------------------


def test_recent_is_ordered_by_recency_with_message_counts(store: SessionStore) -> None:
    first = store.create(name="first")
    second = store.create(name="second")
    third = store.create(name="third")
    assert [s.id for s in store.recent()] == [third.id, second.id, first.id]

    store.append(first.id, turn("hi", "hello"))
    store.append(first.id, [NewMessage("user", "again")])
    listed = store.recent()
    assert [s.id for s in listed] == [first.id, third.id, second.id]
    assert [s.message_count for s in listed] == [3, 0, 0]
    assert store.get(first.id).message_count == 3


def test_recent_limit(store: SessionStore) -> None:
    for index in range(5):
        store.create(name=f"s{index}")
    assert [s.name for s in store.recent(limit=2)] == ["s4", "s3"]


def test_recent_empty(store: SessionStore) -> None:
    assert store.recent() == []


# --- append -----------------------------------------------------------------------------------


def test_append_keeps_order_roles_contents_and_statistics(store: SessionStore) -> None:
    record = store.create()
    store.append(
        record.id,
        [
            NewMessage("system", "Be kind.", created_at=100.0),
            NewMessage("user", "星影って何？", created_at=101.0),
            NewMessage(
                "assistant",
                "Starlight.",
                created_at=102.5,
                prompt_tokens=12,
                completion_tokens=3,
                ttft_s=0.05,
                decode_tokens_per_s=54.0,
                total_s=0.2,
                finish_reason="stop",
            ),
        ],
    )
    messages = store.messages(record.id)
    assert [(m.role, m.content, m.created_at) for m in messages] == [
        ("system", "Be kind.", 100.0),
        ("user", "星影って何？", 101.0),
        ("assistant", "Starlight.", 102.5),
    ]
    answer = messages[2]
    assert answer.prompt_tokens == 12
    assert answer.completion_tokens == 3
    assert answer.ttft_s == 0.05
    assert answer.decode_tokens_per_s == 54.0
    assert answer.total_s == 0.2
    assert answer.finish_reason == "stop"
    assert messages[0].prompt_tokens is None
    assert all(m.session_id == record.id for m in messages)
    assert messages[0].id < messages[1].id < messages[2].id


def test_append_bumps_updated_at(store: SessionStore) -> None:
    record = store.create()
    store.append(record.id, turn("a", "b"))
    assert store.get(record.id).updated_at >= record.updated_at


def test_messages_of_each_session_are_separate(store: SessionStore) -> None:
    one = store.create()
    two = store.create()
    store.append(one.id, turn("one?", "one."))
    store.append(two.id, turn("two?", "two."))
    assert [m.content for m in store.messages(one.id)] == ["one?", "one."]
    assert [m.content for m in store.messages(two.id)] == ["two?", "two."]


def test_failing_append_stores_nothing(store: SessionStore) -> None:
    record = store.create()
    store.append(record.id, turn("before", "kept"))
    updated_at = store.get(record.id).updated_at
    with pytest.raises((StoreError, sqlite3.IntegrityError)):
        store.append(
            record.id,
            [
                NewMessage("user", "this one is valid"),
                NewMessage("assistant", "and so is this"),
                NewMessage("wizard", "but this role violates the CHECK constraint"),
            ],
        )
    assert [m.content for m in store.messages(record.id)] == ["before", "kept"]
    after = store.get(record.id)
    assert after.message_count == 2
    assert after.updated_at == updated_at
    # The store is still usable after the rolled-back turn.
    store.append(record.id, turn("after", "fine"))
    assert store.get(record.id).message_count == 4


def test_append_to_missing_session_stores_nothing(store: SessionStore, database: Database) -> None:
    with pytest.raises((StoreError, sqlite3.IntegrityError)):
        store.append("no-such-session", turn("a", "b"))
    assert database.query("SELECT COUNT(*) FROM messages")[0][0] == 0


# --- delete -----------------------------------------------------------------------------------


def test_delete_cascades_to_messages(store: SessionStore, database: Database) -> None:
    doomed = store.create(name="doomed")
    kept = store.create(name="kept")
    store.append(doomed.id, turn("a", "b"))
    store.append(kept.id, turn("c", "d"))
    store.delete(doomed.id)
    assert [s.id for s in store.recent()] == [kept.id]
    with pytest.raises(StoreError):
        store.find("doomed")
    assert store.messages(doomed.id) == []
    count = database.query("SELECT COUNT(*) FROM messages WHERE session_id = ?", (doomed.id,))
    assert count[0][0] == 0
    assert [m.content for m in store.messages(kept.id)] == ["c", "d"]


def test_deleted_name_can_be_reused(store: SessionStore) -> None:
    store.delete(store.create(name="again").id)
    assert store.create(name="again").name == "again"


# --- durability -------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hoshikage.store import Database, NewMessage, SessionStore

    store = SessionStore(Database(Path(sys.argv[1])))
    session = store.create(name="survivor")
    store.append(session.id, [
        NewMessage("user", "Will you remember this?"),
        NewMessage("assistant", "Always.", completion_tokens=2, finish_reason="stop"),
    ])
    print("ok", session.id, flush=True)
    time.sleep(60)
    """
)


def test_acknowledged_turn_survives_sigkill(tmp_path: Path) -> None:
    db_path = tmp_path / "hoshikage.db"
    Database(db_path).close()  # the file exists before the child starts
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.startswith("ok"):
            os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=10)
    assert line.startswith("ok"), f"child failed: {stderr}"
    assert child.returncode == -signal.SIGKILL
    session_id = line.split()[1]

    database = Database(db_path)
    try:
        store = SessionStore(database)
        record = store.find("survivor")
        assert record.id == session_id
        assert record.message_count == 2
        messages = store.messages(session_id)
        assert [(m.role, m.content) for m in messages] == [
            ("user", "Will you remember this?"),
            ("assistant", "Always."),
        ]
        assert messages[1].finish_reason == "stop"
    finally:
        database.close()
