"""Export a session to JSON and import it back: contents, order and timestamps survive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hoshikage.store import Database, NewMessage, SessionStore, StoreError
from hoshikage.store.transfer import (
    FORMAT_NAME,
    FORMAT_VERSION,
    export_session,
    import_session_file,
    write_session_file,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    database = Database(tmp_path / "hoshikage.db")
    yield SessionStore(database)
    database.close()


@pytest.fixture
def other_store(tmp_path: Path) -> Iterator[SessionStore]:
    database = Database(tmp_path / "elsewhere" / "hoshikage.db")
    yield SessionStore(database)
    database.close()


PARAMS: dict[str, Any] = {"temperature": 0.3, "top_k": 20, "stop": ["###"], "seed": None}


def make_session(store: SessionStore) -> str:
    record = store.create(
        model="/models/qwen2.5-0.5b.gguf",
        system_prompt="あなたは親切なアシスタントです。",
        params=PARAMS,
        name="trip",
        created_at=1_700_000_000.25,
    )
    store.append(
        record.id,
        [
            NewMessage("system", "You are terse.", created_at=1_700_000_001.0),
            NewMessage("user", "Where is 星影?", created_at=1_700_000_002.5),
            NewMessage(
                "assistant",
                "Nowhere 🌌.\nReally.",
                created_at=1_700_000_010.75,
                prompt_tokens=30,
                completion_tokens=6,
                finish_reason="stop",
            ),
            NewMessage("user", "And tomorrow?", created_at=1_700_000_020.0),
            NewMessage(
                "assistant",
                "Still nowhere.",
                created_at=1_700_000_021.0,
                completion_tokens=4,
                finish_reason="length",
            ),
        ],
    )
    return record.id


def test_export_document_shape(store: SessionStore) -> None:
    session_id = make_session(store)
    document = export_session(store, session_id)
    assert document["format"] == FORMAT_NAME == "hoshikage-session"
    assert document["version"] == FORMAT_VERSION
    assert document["id"] == session_id
    assert document["name"] == "trip"
    assert document["params"] == PARAMS
    assert len(document["messages"]) == 5
    first = document["messages"][0]
    assert set(first) >= {"role", "content", "timestamp"}
    # Timestamps are ISO 8601 with a time zone, readable by people and other programs.
    parsed = datetime.fromisoformat(first["timestamp"])
    assert parsed.tzinfo is not None
    assert parsed.timestamp() == pytest.approx(1_700_000_001.0)
    json.dumps(document)  # plain JSON types only


def test_round_trip_keeps_everything(
    store: SessionStore, other_store: SessionStore, tmp_path: Path
) -> None:
    session_id = make_session(store)
    path = tmp_path / "exports" / "trip.json"
    write_session_file(store, session_id, path)

    imported = import_session_file(other_store, path)
    original = store.get(session_id)
    assert imported.name == "trip"
    assert imported.model == original.model
    assert imported.system_prompt == "あなたは親切なアシスタントです。"
    assert imported.params == PARAMS
    assert imported.created_at == pytest.approx(original.created_at, abs=1.0)
    assert imported.message_count == 5

    before = store.messages(session_id)
    after = other_store.messages(imported.id)
    assert [(m.role, m.content) for m in after] == [(m.role, m.content) for m in before]
    assert [m.created_at for m in after] == pytest.approx([m.created_at for m in before], abs=1.0)
    assert [m.prompt_tokens for m in after] == [m.prompt_tokens for m in before]
    assert [m.completion_tokens for m in after] == [m.completion_tokens for m in before]
    assert [m.finish_reason for m in after] == [m.finish_reason for m in before]


def test_file_is_utf8_json_and_no_temporary_file_is_left(
    store: SessionStore, tmp_path: Path
) -> None:
    session_id = make_session(store)
    path = tmp_path / "out" / "session.json"
    write_session_file(store, session_id, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["session.json"]
    text = path.read_text(encoding="utf-8")
    assert "星影" in text  # written as UTF-8, not \\u escapes
    assert json.loads(text)["id"] == session_id


def test_overwriting_a_file_replaces_it_whole(store: SessionStore, tmp_path: Path) -> None:
    session_id = make_session(store)
    path = tmp_path / "session.json"
    path.write_text("x" * 100_000, encoding="utf-8")
    write_session_file(store, session_id, path)
    assert json.loads(path.read_text(encoding="utf-8"))["id"] == session_id
    assert not path.with_name("session.json.tmp").exists()


def test_failed_export_leaves_an_existing_file_alone(store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    path.write_text('{"old": true}', encoding="utf-8")
    with pytest.raises(StoreError):
        write_session_file(store, "no-such-session", path)
    assert path.read_text(encoding="utf-8") == '{"old": true}'
    assert not path.with_name("session.json.tmp").exists()


def test_import_a_bare_list_of_messages(store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "bare.json"
    path.write_text(
        json.dumps(
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!", "timestamp": "2024-05-01T12:00:00Z"},
            ]
        ),
        encoding="utf-8",
    )
    record = import_session_file(store, path)
    assert record.name is None
    assert record.message_count == 2
    messages = store.messages(record.id)
    assert [(m.role, m.content) for m in messages] == [("user", "Hi"), ("assistant", "Hello!")]
    assert messages[1].created_at == datetime.fromisoformat("2024-05-01T12:00:00+00:00").timestamp()


def test_import_when_the_name_is_taken_still_imports(store: SessionStore, tmp_path: Path) -> None:
    session_id = make_session(store)
    path = tmp_path / "trip.json"
    write_session_file(store, session_id, path)

    imported = import_session_file(store, path)
    assert imported.id != session_id
    assert imported.name is None  # the name stays with the original
    assert imported.message_count == 5
    assert store.get(session_id).name == "trip"
    assert len(store.recent()) == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("this is not json {", "is not valid JSON"),
        ("", "is not valid JSON"),
        (json.dumps([{"role": "wizard", "content": "abracadabra"}]), "messages.0.role"),
        (json.dumps({"messages": [{"role": "user"}]}), "messages.0.content"),
        (json.dumps({"name": "no messages"}), "messages"),
        (json.dumps({"format": "something-else", "messages": []}), "format"),
        (json.dumps("just a string"), "is not a session file"),
    ],
)
def test_invalid_files_are_refused_with_the_problem_named(
    store: SessionStore, tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StoreError) as caught:
        import_session_file(store, path)
    message = str(caught.value)
    assert str(path) in message
    assert problem in message
    assert store.recent() == []


def test_wrong_role_message_lists_the_allowed_roles(store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps([{"role": "user", "content": "ok"}, {"role": "bot", "content": "no"}]),
        encoding="utf-8",
    )
    with pytest.raises(StoreError) as caught:
        import_session_file(store, path)
    message = str(caught.value)
    assert "is not a session file" in message
    assert "messages.1.role" in message
    assert "'assistant'" in message


def test_import_missing_file(store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(StoreError, match="cannot read"):
        import_session_file(store, path)


def test_import_keeps_a_name_another_owner_uses(store: SessionStore, tmp_path: Path) -> None:
    session_id = make_session(store)
    path = tmp_path / "session.json"
    write_session_file(store, session_id, path)
    imported = import_session_file(store, path, namespace="key:aaaa/user:bob")
    assert imported.name == "trip" and imported.namespace == "key:aaaa/user:bob"
    again = import_session_file(store, path, namespace="key:aaaa")  # same owner: name taken
    assert again.name is None and again.namespace == "key:aaaa"
    assert store.find("trip", owner="key:aaaa").id == imported.id


def test_import_when_the_name_is_taken_after_the_check(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = make_session(store)
    path = tmp_path / "session.json"
    write_session_file(store, session_id, path)
    monkeypatch.setattr(SessionStore, "named", lambda *_, **__: None)  # another writer raced
    imported = import_session_file(store, path)
    assert imported.name is None
    assert imported.message_count == store.get(session_id).message_count
