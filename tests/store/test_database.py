"""The SQLite file: migrations recorded by name and applied once, WAL journal, transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.store import Database, StoreError
from hoshikage.store.migrations import MIGRATIONS


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "hoshikage.db"


@pytest.fixture
def database(db_path: Path) -> Iterator[Database]:
    db = Database(db_path)
    yield db
    db.close()


def migration_rows(db: Database) -> list[tuple[str, float]]:
    rows = db.query("SELECT name, applied_at FROM schema_migrations ORDER BY rowid")
    return [(row["name"], row["applied_at"]) for row in rows]


def test_open_creates_parent_directories_and_file(db_path: Path, database: Database) -> None:
    assert db_path.is_file()
    assert database.path == db_path


def test_every_migration_is_applied_and_recorded_by_name(database: Database) -> None:
    assert database.applied_migrations() == [name for name, _ in MIGRATIONS]
    assert database.applied_migrations()[0] == "0001_sessions_and_messages"
    tables = {
        row["name"] for row in database.query("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"schema_migrations", "sessions", "messages"} <= tables


def test_reopening_does_not_apply_migrations_again(db_path: Path) -> None:
    first = Database(db_path)
    before = migration_rows(first)
    first.close()

    second = Database(db_path)  # would fail with "table sessions already exists" if re-applied
    try:
        after = migration_rows(second)
    finally:
        second.close()
    assert after == before
    assert len(after) == len(MIGRATIONS)


def test_reopening_keeps_data(db_path: Path) -> None:
    first = Database(db_path)
    with first.transaction() as conn:
        conn.execute(
            "INSERT INTO sessions (id, name, created_at, updated_at) VALUES ('abc', 'n', 1, 1)"
        )
    first.close()
    second = Database(db_path)
    try:
        assert [row["id"] for row in second.query("SELECT id FROM sessions")] == ["abc"]
    finally:
        second.close()


def test_wal_journal_and_full_sync_and_foreign_keys(database: Database) -> None:
    assert database.query("PRAGMA journal_mode")[0][0] == "wal"
    assert database.query("PRAGMA synchronous")[0][0] == 2  # FULL
    assert database.query("PRAGMA foreign_keys")[0][0] == 1


def test_wal_mode_is_persistent_in_the_file(db_path: Path, database: Database) -> None:
    plain = sqlite3.connect(db_path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_transaction_commits(database: Database) -> None:
    with database.transaction() as conn:
        conn.execute("INSERT INTO sessions (id, created_at, updated_at) VALUES ('one', 1, 1)")
    assert len(database.query("SELECT id FROM sessions")) == 1


def test_transaction_rolls_back_everything_on_error(database: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), database.transaction() as conn:
        conn.execute("INSERT INTO sessions (id, created_at, updated_at) VALUES ('one', 1, 1)")
        conn.execute("INSERT INTO sessions (id, created_at, updated_at) VALUES ('two', 1, 1)")
        raise RuntimeError("boom")
    assert database.query("SELECT id FROM sessions") == []
    # The connection is usable again after the rollback.
    with database.transaction() as conn:
        conn.execute("INSERT INTO sessions (id, created_at, updated_at) VALUES ('three', 1, 1)")
    assert [row["id"] for row in database.query("SELECT id FROM sessions")] == ["three"]


def test_check_constraint_on_message_role(database: Database) -> None:
    with database.transaction() as conn:
        conn.execute("INSERT INTO sessions (id, created_at, updated_at) VALUES ('s', 1, 1)")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"), database.transaction() as conn:
        conn.execute(
            "INSERT INTO messages (session_id, role, content, created_at)"
            " VALUES ('s', 'wizard', 'x', 1)"
        )


def test_foreign_key_enforced(database: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), database.transaction() as conn:
        conn.execute(
            "INSERT INTO messages (session_id, role, content, created_at)"
            " VALUES ('no-such-session', 'user', 'x', 1)"
        )


def test_migrations_run_without_foreign_keys_but_may_not_break_them(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that leaves a dangling reference is rolled back, with every other one of
    the same open, and the file stays as it was."""
    Database(db_path).close()
    dangling = (
        "9999_dangling",
        "INSERT INTO messages (session_id, role, content, created_at)"
        " VALUES ('no-such-session', 'user', 'x', 1)",
    )
    monkeypatch.setattr("hoshikage.store.database.MIGRATIONS", (*MIGRATIONS, dangling))
    with pytest.raises(StoreError, match="broke 1 foreign key reference"):
        Database(db_path)
    monkeypatch.undo()
    database = Database(db_path)
    try:
        assert database.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert database.query("SELECT COUNT(*) FROM messages")[0][0] == 0
        assert database.query("PRAGMA foreign_keys")[0][0] == 1
    finally:
        database.close()


def test_session_names_are_unique_per_owner_in_the_schema(database: Database) -> None:
    insert = (
        "INSERT INTO sessions (id, name, created_at, updated_at, namespace) VALUES (?, ?, 1, 1, ?)"
    )
    with database.transaction() as conn:
        conn.execute(insert, ("1", "work", "key:a"))
        conn.execute(insert, ("2", "work", "key:b"))
        conn.execute(insert, ("3", "work", "local"))
        conn.execute(insert, ("4", None, "key:a"))
        conn.execute(insert, ("5", None, "key:a"))
    for namespace in ("key:a", "key:a/user:bob"):
        with (
            pytest.raises(sqlite3.IntegrityError, match="sessions_name_per_owner"),
            database.transaction() as conn,
        ):
            conn.execute(insert, ("6", "work", namespace))
