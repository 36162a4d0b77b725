"""Sessions and their messages: the conversation history every front end shares."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hoshikage.store.database import Database, StoreError


class SessionNameTaken(StoreError):
    """The name is already used by another session of the same owner."""


@dataclass(frozen=True)
class SessionRecord:
    id: str
    name: str | None
    model: str | None
    system_prompt: str | None
    params: dict[str, Any]
    created_at: float
    updated_at: float
    namespace: str = "local"  # whose memory its turns go to
    message_count: int = 0

    @property
    def label(self) -> str:
        return self.name or self.id[:8]


@dataclass(frozen=True)
class NewMessage:
    """A message to store; the statistics are filled for assistant answers."""

    role: str
    content: str
    created_at: float = field(default_factory=time.time)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    total_s: float | None = None
    finish_reason: str | None = None
    remember: bool = True  # False: never index this message into long-term memory
    # An assistant's tool calls as (id, name, arguments JSON); a tool result's call and tool.
    tool_calls: tuple[tuple[str, str, str], ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    reasoning: str | None = None  # the thinking an answer came with (not its content)


@dataclass(frozen=True)
class MessageRecord(NewMessage):
    id: int = 0
    session_id: str = ""


_MESSAGE_COLUMNS = (
    "role",
    "content",
    "created_at",
    "prompt_tokens",
    "completion_tokens",
    "ttft_s",
    "decode_tokens_per_s",
    "total_s",
    "finish_reason",
    "remember",
    "tool_calls",
    "tool_call_id",
    "tool_name",
    "reasoning",
)


class SessionStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    @property
    def database(self) -> Database:
        return self._db

    def create(
        self,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        params: dict[str, Any] | None = None,
        name: str | None = None,
        created_at: float | None = None,
        namespace: str = "local",
    ) -> SessionRecord:
        """A new session of `namespace`; its `name`, if any, must be free among the sessions
        of the namespace's owner (other owners may use the same name)."""
        now = time.time()
        session_id = uuid.uuid4().hex
        with _name_clash_refused(name), self._db.transaction() as conn:
            if name is not None:
                self._ensure_name_free(conn, name, session_id, owner_of(namespace))
            conn.execute(
                "INSERT INTO sessions (id, name, model, system_prompt, params, created_at,"
                " updated_at, namespace) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    name,
                    model,
                    system_prompt,
                    json.dumps(params or {}),
                    now if created_at is None else created_at,
                    now,
                    namespace,
                ),
            )
        return self.get(session_id)

    def get(self, session_id: str) -> SessionRecord:
        rows = self._db.query(_SESSION_SELECT + " WHERE s.id = ? GROUP BY s.id", (session_id,))
        if not rows:
            raise StoreError(f"no session with id {session_id}")
        return _session_from_row(rows[0])

    def find(self, name_or_id: str, *, owner: str | None = None) -> SessionRecord:
        """A session by exact name, by id, or by a unique id prefix; with `owner`, only
        among the sessions of that namespace (and of its users). Without one (the terminal,
        which owns the whole file), a name that several owners use is refused as ambiguous."""
        mine, params = _owned(owner)
        rows = self._db.query(
            _SESSION_SELECT + f" WHERE (s.name = ? OR s.id = ?){mine} GROUP BY s.id",
            (name_or_id, name_or_id, *params),
        )
        if len(rows) > 1:
            raise StoreError(f"{name_or_id!r} names several sessions; use the session's id")
        if not rows and len(name_or_id) >= 4:
            rows = self._db.query(
                _SESSION_SELECT + f" WHERE substr(s.id, 1, ?) = ?{mine} GROUP BY s.id",
                (len(name_or_id), name_or_id, *params),
            )
        if not rows:
            raise StoreError(f"no saved session named {name_or_id!r} (see /sessions)")
        if len(rows) > 1:
            raise StoreError(f"{name_or_id!r} matches several sessions; use more of the id")
        return _session_from_row(rows[0])

    def named(self, name: str, *, owner: str = "local") -> SessionRecord | None:
        """The session of `owner` (or of one of its users) with exactly this name: the one
        that `create(name=name)` in a namespace of that owner would clash with."""
        rows = self._db.query(
            _SESSION_SELECT + f" WHERE {_OWNER_SQL_S} = ? AND s.name = ? GROUP BY s.id",
            (owner, name),
        )
        return _session_from_row(rows[0]) if rows else None

    def recent(self, limit: int = 50, *, owner: str | None = None) -> list[SessionRecord]:
        """Sessions, most recently updated first; with `owner`, only that namespace's."""
        mine, params = _owned(owner)
        rows = self._db.query(
            _SESSION_SELECT + f" WHERE 1{mine} GROUP BY s.id ORDER BY s.updated_at DESC LIMIT ?",
            (*params, limit),
        )
        return [_session_from_row(row) for row in rows]

    def rename(self, session_id: str, name: str) -> SessionRecord:
        """Name a session; the name must be free among the sessions of its own owner."""
        if not name.strip():
            raise StoreError("a session name cannot be empty")
        with _name_clash_refused(name), self._db.transaction() as conn:
            row = conn.execute(
                "SELECT namespace FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no session with id {session_id}")
            self._ensure_name_free(conn, name, session_id, owner_of(row["namespace"]))
            conn.execute("UPDATE sessions SET name = ? WHERE id = ?", (name, session_id))
        return self.get(session_id)

    def update(
        self,
        session_id: str,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Record the session's current model, system prompt and parameters."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE sessions SET model = COALESCE(?, model), system_prompt = ?,"
                " params = COALESCE(?, params), updated_at = ? WHERE id = ?",
                (
                    model,
                    system_prompt,
                    None if params is None else json.dumps(params),
                    time.time(),
                    session_id,
                ),
            )

    def delete(self, session_id: str) -> None:
        """Delete a session, its messages and its memories (their rows cascade; their keyword
        index entries, which no foreign key reaches, are deleted here)."""
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM memories_fts WHERE rowid IN"
                " (SELECT id FROM memories WHERE session_id = ?)",
                (session_id,),
            )
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            # Merge the keyword index's segments so that no deleted text lingers in them.
            conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")

    def append(self, session_id: str, messages: Sequence[NewMessage]) -> list[MessageRecord]:
        """Store a whole turn atomically; it is on disk when this returns."""
        try:
            return self._append(session_id, messages)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot store the turn in session {session_id}: {exc}") from exc

    def _append(self, session_id: str, messages: Sequence[NewMessage]) -> list[MessageRecord]:
        insert = (
            f"INSERT INTO messages (session_id, {', '.join(_MESSAGE_COLUMNS)})"
            f" VALUES (?, {', '.join('?' for _ in _MESSAGE_COLUMNS)})"
        )
        stored = []
        with self._db.transaction() as conn:
            for message in messages:
                values = (_column_value(message, column) for column in _MESSAGE_COLUMNS)
                cursor = conn.execute(insert, (session_id, *values))
                stored.append(
                    MessageRecord(
                        **dataclasses.asdict(message),
                        id=int(cursor.lastrowid or 0),
                        session_id=session_id,
                    )
                )
            conn.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), session_id)
            )
        return stored

    def messages(self, session_id: str) -> list[MessageRecord]:
        rows = self._db.query(
            f"SELECT id, session_id, {', '.join(_MESSAGE_COLUMNS)} FROM messages"
            " WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [_message_from_row(row) for row in rows]

    @staticmethod
    def _ensure_name_free(conn: sqlite3.Connection, name: str, session_id: str, owner: str) -> None:
        """Refuse `name` if another session of `owner` has it (run inside the write
        transaction; the sessions_name_per_owner index enforces it again on write)."""
        row = conn.execute(
            f"SELECT id FROM sessions WHERE {_OWNER_SQL} = ? AND name = ?", (owner, name)
        ).fetchone()
        if row is not None and row["id"] != session_id:
            raise SessionNameTaken(_taken(name))


# owner_of(namespace) in SQL, exactly as the sessions_name_per_owner index spells it (migration
# 0004), so that SQLite can use the index for it.
_OWNER_SQL = "substr(namespace, 1, instr(namespace || '/', '/') - 1)"
_OWNER_SQL_S = "substr(s.namespace, 1, instr(s.namespace || '/', '/') - 1)"
_NAME_INDEX = "sessions_name_per_owner"


def _taken(name: str | None) -> str:
    return f"a session named {name!r} already exists; pick another name"


@contextmanager
def _name_clash_refused(name: str | None) -> Iterator[None]:
    """Turn the name index's refusal (a writer that got past the check) into the store's."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if _NAME_INDEX in str(exc):
            raise SessionNameTaken(_taken(name)) from None
        raise


_SESSION_SELECT = (
    "SELECT s.*, COUNT(m.id) AS message_count FROM sessions s"
    " LEFT JOIN messages m ON m.session_id = s.id"
)


def owner_of(namespace: str) -> str:
    """Whose sessions a namespace may use: an API key's (or the local user's) namespace owns
    its users' ones too ('key:ab12/user:bob' is owned by 'key:ab12')."""
    return namespace.partition("/")[0]


def _owned(owner: str | None) -> tuple[str, tuple[object, ...]]:
    """An SQL condition (and its parameters) for sessions of `owner` and of its users."""
    if owner is None:
        return "", ()
    prefix = owner + "/"
    return " AND (s.namespace = ? OR substr(s.namespace, 1, ?) = ?)", (owner, len(prefix), prefix)


def _column_value(message: NewMessage, column: str) -> Any:
    if column == "tool_calls":
        calls = [{"id": i, "name": n, "arguments": a} for i, n, a in message.tool_calls]
        return json.dumps(calls, ensure_ascii=False) if calls else None
    return getattr(message, column)


def _message_from_row(row: sqlite3.Row) -> MessageRecord:
    data = dict(row)
    data["remember"] = bool(data["remember"])
    calls = json.loads(data["tool_calls"]) if data["tool_calls"] else []
    data["tool_calls"] = tuple((c["id"], c["name"], c["arguments"]) for c in calls)
    return MessageRecord(**data)


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    data = dict(row)
    data["params"] = json.loads(data["params"] or "{}")
    return SessionRecord(**data)
