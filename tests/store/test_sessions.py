"""Sessions and messages: create/find/rename/update/list/append/delete, atomicity, durability,
names unique per owner (and the migration that made them so)."""

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

from hoshikage.store import Database, NewMessage, SessionNameTaken, SessionStore, StoreError
from hoshikage.store.migrations import MIGRATIONS


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


# --- names are unique per owner -----------------------------------------------------------------

KEY_A = "key:aaaaaaaaaaaaaaaa"
KEY_B = "key:bbbbbbbbbbbbbbbb"


def test_two_owners_may_each_have_a_session_of_the_same_name(store: SessionStore) -> None:
    mine = store.create(name="work", namespace=KEY_A)
    theirs = store.create(name="work", namespace=KEY_B)
    local = store.create(name="work")
    assert len({mine.id, theirs.id, local.id}) == 3
    assert store.find("work", owner=KEY_A).id == mine.id
    assert store.find("work", owner=KEY_B).id == theirs.id
    assert store.find("work", owner="local").id == local.id
    assert [s.id for s in store.recent(owner=KEY_B)] == [theirs.id]


def test_within_one_owner_a_duplicate_name_is_refused(store: SessionStore) -> None:
    store.create(name="work", namespace=KEY_A)
    with pytest.raises(SessionNameTaken, match="'work' already exists"):
        store.create(name="work", namespace=KEY_A)
    # The owner's users share its names: its sessions are found by name from any of them.
    with pytest.raises(SessionNameTaken, match="'work' already exists"):
        store.create(name="work", namespace=f"{KEY_A}/user:bob")
    assert len(store.recent(owner=KEY_A)) == 1


def test_a_name_taken_by_an_owners_user_is_taken_for_the_owner(store: SessionStore) -> None:
    bobs = store.create(name="diary", namespace=f"{KEY_A}/user:bob")
    with pytest.raises(SessionNameTaken):
        store.create(name="diary", namespace=KEY_A)
    with pytest.raises(SessionNameTaken):
        store.create(name="diary", namespace=f"{KEY_A}/user:alice")
    assert store.find("diary", owner=KEY_A).id == bobs.id
    assert store.create(name="diary", namespace=f"{KEY_B}/user:bob").name == "diary"


def test_a_name_clash_is_a_store_error_for_existing_callers(store: SessionStore) -> None:
    store.create(name="work", namespace=KEY_A)
    with pytest.raises(StoreError):  # what the API turns into 409
        store.create(name="work", namespace=KEY_A)


def test_rename_is_scoped_to_the_sessions_owner(store: SessionStore) -> None:
    store.create(name="work", namespace=KEY_A)
    theirs = store.create(name="play", namespace=KEY_B)
    assert store.rename(theirs.id, "work").name == "work"  # A's name is no obstacle
    other = store.create(name="other", namespace=KEY_B)
    with pytest.raises(SessionNameTaken, match="'work' already exists; pick another name"):
        store.rename(other.id, "work")
    assert store.get(other.id).name == "other"
    users = store.create(name="u", namespace=f"{KEY_B}/user:carol")
    with pytest.raises(SessionNameTaken):
        store.rename(users.id, "work")


def test_rename_of_a_missing_session(store: SessionStore) -> None:
    with pytest.raises(StoreError, match="no session with id nope"):
        store.rename("nope", "name")


def test_named_is_scoped_to_an_owner_and_defaults_to_the_local_user(store: SessionStore) -> None:
    mine = store.create(name="work", namespace=KEY_A)
    assert store.named("work") is None  # the default owner is the local user, not everyone
    assert store.named("work", owner=KEY_B) is None
    assert store.named("work", owner=KEY_A) == mine
    local = store.create(name="work")
    assert store.named("work") == local
    users = store.create(name="notes", namespace=f"{KEY_A}/user:bob")
    assert store.named("notes", owner=KEY_A) == users


def test_find_never_crosses_owners(store: SessionStore) -> None:
    mine = store.create(name="work", namespace=KEY_A)
    with pytest.raises(StoreError, match="no saved session"):
        store.find("work", owner=KEY_B)
    with pytest.raises(StoreError, match="no saved session"):
        store.find(mine.id, owner=KEY_B)
    with pytest.raises(StoreError, match="no saved session"):
        store.find(mine.id[:8], owner=KEY_B)


def test_unscoped_find_refuses_a_name_several_owners_use(store: SessionStore) -> None:
    mine = store.create(name="work", namespace=KEY_A)
    assert store.find("work").id == mine.id  # only one so far
    theirs = store.create(name="work", namespace=KEY_B)
    with pytest.raises(StoreError, match="'work' names several sessions; use the session's id"):
        store.find("work")
    assert store.find(theirs.id).id == theirs.id


def test_the_index_refuses_a_clash_the_check_missed(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique (owner, name) index holds even for a writer that skipped the check."""
    store.create(name="work", namespace=KEY_A)
    monkeypatch.setattr(SessionStore, "_ensure_name_free", staticmethod(lambda *_: None))
    with pytest.raises(SessionNameTaken, match="'work' already exists"):
        store.create(name="work", namespace=f"{KEY_A}/user:bob")
    other = store.create(name="other", namespace=KEY_A)
    with pytest.raises(SessionNameTaken, match="'work' already exists"):
        store.rename(other.id, "work")
    assert store.create(name="work", namespace=KEY_B).name == "work"
    assert [s.name for s in store.recent(owner=KEY_A)] == ["other", "work"]


def test_the_name_check_uses_the_owner_name_index(database: Database) -> None:
    """_OWNER_SQL is spelled like the index's expression, so the check is an index search."""
    from hoshikage.store.sessions import _OWNER_SQL, _OWNER_SQL_S

    plans = [
        database.query(f"EXPLAIN QUERY PLAN SELECT id FROM sessions {where}", ("o", "n"))
        for where in (
            f"WHERE {_OWNER_SQL} = ? AND name = ?",
            f"s WHERE {_OWNER_SQL_S} = ? AND s.name = ?",
        )
    ]
    for plan in plans:
        assert "USING INDEX sessions_name_per_owner" in plan[0]["detail"]


def test_concurrent_creates_of_one_name_leave_one_session(tmp_path: Path) -> None:
    """Two connections (as the server and the terminal have) racing for one owner's name."""
    import threading

    path = tmp_path / "shared.db"
    Database(path).close()
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def racer() -> None:
        database = Database(path)
        try:
            start.wait()
            SessionStore(database).create(name="race", namespace=KEY_A)
            outcomes.append("created")
        except SessionNameTaken:
            outcomes.append("taken")
        finally:
            database.close()

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created"] + ["taken"] * 7
    database = Database(path)
    try:
        assert [s.name for s in SessionStore(database).recent(owner=KEY_A)] == ["race"]
    finally:
        database.close()


# --- the migration to names per owner ---------------------------------------------------------


def _old_database(path: Path) -> None:
    """A file as the version before names per owner left it: migrations 0001-0003 applied
    (with foreign keys on, as that version ran), and data in every table that references
    sessions."""
    old = [m for m in MIGRATIONS if m[0] < "0004"]
    assert [name for name, _ in old] == [
        "0001_sessions_and_messages",
        "0002_models",
        "0003_memory",
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        for name, sql in old:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 1.0)", (name,))
        conn.executemany(
            "INSERT INTO sessions (id, name, model, system_prompt, params, created_at,"
            " updated_at, namespace) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("a" * 32, "work", "m.gguf", "Be brief.", '{"top_k": 3}', 10.0, 20.0, KEY_A),
                ("b" * 32, "play", None, None, "{}", 11.0, 21.0, f"{KEY_B}/user:bob"),
                ("c" * 32, None, None, None, "{}", 12.0, 22.0, "local"),
            ],
        )
        conn.execute(
            "INSERT INTO messages (id, session_id, role, content, created_at, prompt_tokens,"
            " finish_reason, remember) VALUES (1, ?, 'user', 'hello', 30.0, 5, NULL, 1),"
            " (2, ?, 'assistant', 'hi there', 31.0, NULL, 'stop', 0)",
            ("a" * 32, "a" * 32),
        )
        conn.execute(
            "INSERT INTO messages (id, session_id, role, content, created_at)"
            " VALUES (3, ?, 'user', 'bob here', 32.0)",
            ("b" * 32,),
        )
        conn.execute(
            "INSERT INTO memories (id, namespace, session_id, message_id, role, text,"
            " created_at) VALUES (7, ?, ?, 1, 'user', 'hello', 30.0)",
            (KEY_A, "a" * 32),
        )
        conn.execute("INSERT INTO memories_fts (rowid, text) VALUES (7, 'hello')")
        conn.execute(
            "INSERT INTO summaries (session_id, through_message_id, text, source_ids, method,"
            " created_at) VALUES (?, 2, 'a greeting', '[1, 2]', 'oldest', 40.0)",
            ("a" * 32,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _rows(database: Database, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in database.query(sql)]


def test_migration_of_an_old_database_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    before = sqlite3.connect(path)
    try:
        tables = ("sessions", "messages", "memories", "summaries")
        expected = {t: before.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
        fts = before.execute("SELECT rowid, text FROM memories_fts").fetchall()
    finally:
        before.close()
    assert len(expected["messages"]) == 3  # the fixture wrote what the checks compare

    database = Database(path)
    try:
        assert database.applied_migrations() == [name for name, _ in MIGRATIONS]
        for table in tables:
            rows = _rows(database, f"SELECT * FROM {table} ORDER BY 1")
            width = len(expected[table][0]) if expected[table] else 0
            # Later migrations add columns: the old ones keep their values, the new are empty.
            assert [row[:width] for row in rows] == expected[table]
            assert all(value is None for row in rows for value in row[width:])
        assert _rows(database, "SELECT rowid, text FROM memories_fts") == fts
        assert database.query("PRAGMA foreign_keys")[0][0] == 1
        assert database.query("PRAGMA foreign_key_check") == []
        indexes = {
            row["name"]
            for row in database.query(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'"
            )
        }
        assert {"sessions_by_update", "sessions_by_namespace", "sessions_name_per_owner"} <= (
            indexes
        )
        # No UNIQUE constraint of a column is left (origin 'u'): only the key and the index.
        unique = {
            (row["name"], row["origin"])
            for row in database.query("PRAGMA index_list(sessions)")
            if row["unique"]
        }
        assert {origin for _, origin in unique} == {"pk", "c"}
        assert ("sessions_name_per_owner", "c") in unique

        store = SessionStore(database)
        work = store.find("work", owner=KEY_A)
        assert (work.model, work.system_prompt) == ("m.gguf", "Be brief.")
        assert work.params == {"top_k": 3}
        assert work.message_count == 2
        assert [m.content for m in store.messages(work.id)] == ["hello", "hi there"]
        # The old global uniqueness is gone; the per-owner one is in force.
        assert store.create(name="work", namespace=KEY_B).name == "work"
        assert store.create(name="work").name == "work"
        with pytest.raises(SessionNameTaken):
            store.create(name="play", namespace=KEY_B)
        # Foreign keys are enforced again, and still cascade to the migrated rows.
        store.delete(work.id)
        assert store.messages(work.id) == []
        assert _rows(database, "SELECT id FROM memories") == []
        assert _rows(database, "SELECT session_id FROM summaries") == []
        assert [m.content for m in store.messages("b" * 32)] == ["bob here"]
    finally:
        database.close()


def test_migration_is_applied_once_and_reopening_keeps_names_per_owner(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    Database(path).close()
    database = Database(path)  # would fail ("table sessions_0004 ...") if applied again
    try:
        rows = database.query("SELECT name FROM schema_migrations WHERE name LIKE '0004%'")
        assert [row["name"] for row in rows] == ["0004_session_names_per_owner"]
        store = SessionStore(database)
        store.create(name="work", namespace=KEY_B)
        with pytest.raises(SessionNameTaken):
            store.create(name="work", namespace=f"{KEY_A}/user:x")
    finally:
        database.close()


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


@pytest.mark.parametrize(
    "namespace", ["local", "key:ab12", "key:ab12/user:bob", "key:ab12/user:a/b", "", "/x", "星/影"]
)
def test_the_schemas_owner_is_owner_of(database: Database, namespace: str) -> None:
    from hoshikage.store.sessions import _OWNER_SQL, owner_of

    row = database.query(f"SELECT {_OWNER_SQL} AS owner FROM (SELECT ? AS namespace)", (namespace,))
    assert row[0]["owner"] == owner_of(namespace)
