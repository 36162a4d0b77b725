"""Append-only, named schema migrations. Never edit one that has shipped; add a new one.

They run with foreign-key enforcement off (see Database._migrate), so that a migration may
rebuild a table that others reference without its DROP cascading into theirs; the whole
schema is checked with PRAGMA foreign_key_check before the migrations commit.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_sessions_and_messages",
        """
        CREATE TABLE sessions (
            id            TEXT PRIMARY KEY,
            name          TEXT UNIQUE,
            model         TEXT,
            system_prompt TEXT,
            params        TEXT NOT NULL DEFAULT '{}',
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL
        );
        CREATE TABLE messages (
            id                  INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id          TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role                TEXT NOT NULL
                                CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content             TEXT NOT NULL,
            created_at          REAL NOT NULL,
            prompt_tokens       INTEGER,
            completion_tokens   INTEGER,
            ttft_s              REAL,
            decode_tokens_per_s REAL,
            total_s             REAL,
            finish_reason       TEXT
        );
        CREATE INDEX messages_by_session ON messages(session_id, id);
        CREATE INDEX sessions_by_update ON sessions(updated_at);
        """,
    ),
    (
        "0002_models",
        # The model registry: one row per alias; several aliases may name the same file.
        # keep_alive_s NULL means the global keep_alive setting; metadata is JSON.
        """
        CREATE TABLE models (
            name           TEXT PRIMARY KEY,
            path           TEXT NOT NULL,
            sha256         TEXT,
            size_bytes     INTEGER,
            architecture   TEXT,
            quantization   TEXT,
            context_length INTEGER,
            parameters     INTEGER,
            embedding      INTEGER NOT NULL DEFAULT 0 CHECK (embedding IN (0, 1)),
            keep_alive_s   REAL,
            source         TEXT,
            metadata       TEXT NOT NULL DEFAULT '{}',
            added_at       REAL NOT NULL
        );
        CREATE INDEX models_by_path ON models(path);
        """,
    ),
    (
        "0003_memory",
        # Long-term memory. A session belongs to a namespace (an API key, a `user`, or
        # 'local' for the terminal); its turns are remembered there. messages.remember = 0
        # marks a turn that opted out of memory or was forgotten, so catch-up indexing never
        # brings it back. memories_fts is a plain FTS5 table keyed by the memory id (its own
        # copy of the text keeps deletes simple and exact). A summary covers a session's
        # messages up to through_message_id and names the messages it drew on.
        """
        ALTER TABLE sessions ADD COLUMN namespace TEXT NOT NULL DEFAULT 'local';
        ALTER TABLE messages ADD COLUMN remember INTEGER NOT NULL DEFAULT 1
            CHECK (remember IN (0, 1));
        CREATE TABLE memories (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace       TEXT NOT NULL,
            session_id      TEXT REFERENCES sessions(id) ON DELETE CASCADE,
            message_id      INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'fact')),
            text            TEXT NOT NULL,
            created_at      REAL NOT NULL,
            importance      REAL NOT NULL DEFAULT 0.5
                            CHECK (importance >= 0 AND importance <= 1),
            embedding       BLOB,
            embedding_model TEXT
        );
        CREATE INDEX memories_by_namespace ON memories(namespace, created_at);
        CREATE INDEX memories_by_session ON memories(session_id);
        CREATE UNIQUE INDEX memories_by_message ON memories(message_id);
        CREATE VIRTUAL TABLE memories_fts USING fts5(
            text, tokenize = 'porter unicode61 remove_diacritics 2'
        );
        CREATE TABLE summaries (
            session_id         TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            through_message_id INTEGER NOT NULL,
            text               TEXT NOT NULL,
            source_ids         TEXT NOT NULL DEFAULT '[]',
            method             TEXT NOT NULL CHECK (method IN ('clusters', 'oldest')),
            created_at         REAL NOT NULL
        );
        CREATE INDEX sessions_by_namespace ON sessions(namespace);
        """,
    ),
    (
        "0004_session_names_per_owner",
        # Session names were UNIQUE across the whole file, so one API key could learn of (and
        # take) another key's names. A name is now unique per owner: an expression index on
        # (owner, name), the owner computed from namespace so that it cannot drift from it.
        # The column's inline UNIQUE cannot be dropped, so the table is rebuilt (SQLite's
        # documented procedure: new table, copy, drop, rename, recreate its indexes); rows
        # referencing it (messages, memories, summaries) keep their session ids. The owner
        # expression is owner_of() in SQL; sessions.py queries with the same text (_OWNER_SQL)
        # so that SQLite uses the index.
        """
        CREATE TABLE sessions_0004 (
            id            TEXT PRIMARY KEY,
            name          TEXT,
            model         TEXT,
            system_prompt TEXT,
            params        TEXT NOT NULL DEFAULT '{}',
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            namespace     TEXT NOT NULL DEFAULT 'local'
        );
        INSERT INTO sessions_0004
            (id, name, model, system_prompt, params, created_at, updated_at, namespace)
            SELECT id, name, model, system_prompt, params, created_at, updated_at, namespace
            FROM sessions;
        DROP TABLE sessions;
        ALTER TABLE sessions_0004 RENAME TO sessions;
        CREATE INDEX sessions_by_update ON sessions(updated_at);
        CREATE INDEX sessions_by_namespace ON sessions(namespace);
        CREATE UNIQUE INDEX sessions_name_per_owner ON sessions(
            substr(namespace, 1, instr(namespace || '/', '/') - 1), name
        );
        """,
    ),
    (
        "0005_message_tool_calls_and_reasoning",
        # A turn with tools is more than text: an assistant's calls (a JSON list of
        # {"id", "name", "arguments"}), which call a tool message answers and the tool's name,
        # and the thinking an answer came with, kept beside its content (never in it, so that
        # thinking is neither replayed as the answer nor remembered).
        """
        ALTER TABLE messages ADD COLUMN tool_calls TEXT;
        ALTER TABLE messages ADD COLUMN tool_call_id TEXT;
        ALTER TABLE messages ADD COLUMN tool_name TEXT;
        ALTER TABLE messages ADD COLUMN reasoning TEXT;
        """,
    ),
    (
        "0006_responses",
        # OpenAI Responses API objects. Their conversation is a session (its turns, memory and
        # KV cache): a response names the session it was stored in, and previous_response_id
        # continues that session. `body` is the response object as returned; `input_items`
        # the items its request added. Deleting the session deletes its responses.
        """
        CREATE TABLE responses (
            id           TEXT PRIMARY KEY,
            session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            namespace    TEXT NOT NULL,
            created_at   REAL NOT NULL,
            body         TEXT NOT NULL,
            input_items  TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX responses_by_session ON responses(session_id);
        """,
    ),
)
