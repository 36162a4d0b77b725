"""Append-only, named schema migrations. Never edit one that has shipped; add a new one."""

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
)
