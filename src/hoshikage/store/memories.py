"""Long-term memories, their keyword index (FTS5) and conversation summaries, in SQLite.

A memory is a remembered message (or a fact added by hand) in a namespace, with its
embedding as float32 bytes and the name of the vector space that embedding lives in. Vectors
are searched in memory by `hoshikage.memory`; this module only stores and filters them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hoshikage.store.database import Database

MemoryRole = Literal["user", "assistant", "fact"]
SummaryMethod = Literal["clusters", "oldest"]

# Words that say nothing about what a memory is about; left out of keyword queries so that
# "What is my cat's name?" matches on "cat" and "name", not on "what" and "is".
_STOP_WORD_TEXT = """
a about above after again all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself no nor not now of off on once only or other our
ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself
yourselves s t d ll m re ve tell told know remember please
"""
STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
_WORD = re.compile(r"\w+", re.UNICODE)


def keyword_terms(text: str) -> list[str]:
    """The words of a query worth matching on, lowercased, once each, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOP_WORDS and (len(word) > 1 or not word.isascii()):
            seen.setdefault(word, None)
    return list(seen)


@dataclass(frozen=True)
class NewMemory:
    namespace: str
    text: str
    role: MemoryRole = "fact"
    session_id: str | None = None
    message_id: int | None = None
    created_at: float = field(default_factory=time.time)
    importance: float = 0.5
    embedding: bytes | None = None  # float32, L2-normalised
    embedding_model: str | None = None  # the vector space it belongs to


@dataclass(frozen=True)
class MemoryRecord:
    id: int
    namespace: str
    session_id: str | None
    message_id: int | None
    role: MemoryRole
    text: str
    created_at: float
    importance: float
    embedding_model: str | None


@dataclass(frozen=True)
class MemoryFilter:
    """Which memories of a namespace a search or listing may return."""

    namespace: str
    session_id: str | None = None  # only this conversation's
    exclude_session: str | None = None  # everything but this conversation's
    since: float | None = None
    until: float | None = None

    def sql(self, alias: str = "m") -> tuple[str, list[Any]]:
        clauses: list[str] = [f"{alias}.namespace = ?"]
        params: list[Any] = [self.namespace]
        if self.session_id is not None:
            clauses.append(f"{alias}.session_id = ?")
            params.append(self.session_id)
        if self.exclude_session is not None:
            clauses.append(f"{alias}.session_id IS NOT ?")
            params.append(self.exclude_session)
        if self.since is not None:
            clauses.append(f"{alias}.created_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{alias}.created_at <= ?")
            params.append(self.until)
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class StoredVectors:
    """The embeddings of one namespace in one vector space, for the in-memory index."""

    ids: list[int]
    blobs: list[bytes]
    session_ids: list[str | None]
    created_at: list[float]


@dataclass(frozen=True)
class PendingMessage:
    """A stored message that should be remembered and is not yet."""

    message_id: int
    session_id: str
    namespace: str
    role: Literal["user", "assistant"]
    text: str
    created_at: float


@dataclass(frozen=True)
class SummaryRecord:
    session_id: str
    through_message_id: int
    text: str
    source_ids: list[int]
    method: SummaryMethod
    created_at: float


_MEMORY_COLUMNS = (
    "id, namespace, session_id, message_id, role, text, created_at, importance, embedding_model"
)


class MemoryStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- memories --------------------------------------------------------------------------
    def add(self, memories: Sequence[NewMemory]) -> list[MemoryRecord | None]:
        """Store memories and their keyword index entries in one transaction; for each, its
        record, or None where its message is remembered already or no longer exists."""
        records: list[MemoryRecord | None] = []
        with self._db.transaction() as conn:
            for memory in memories:
                # A message is remembered once, and only while it exists: another process
                # may have remembered it, or its session been deleted, since it was read.
                cursor = conn.execute(
                    "INSERT INTO memories (namespace, session_id, message_id, role, text,"
                    " created_at, importance, embedding, embedding_model)"
                    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE ?3 IS NULL OR ("
                    " EXISTS (SELECT 1 FROM messages WHERE id = ?3)"
                    " AND NOT EXISTS (SELECT 1 FROM memories WHERE message_id = ?3))",
                    (
                        memory.namespace,
                        memory.session_id,
                        memory.message_id,
                        memory.role,
                        memory.text,
                        memory.created_at,
                        memory.importance,
                        memory.embedding,
                        memory.embedding_model,
                    ),
                )
                if cursor.rowcount == 0:
                    records.append(None)
                    continue
                memory_id = int(cursor.lastrowid or 0)
                conn.execute(
                    "INSERT INTO memories_fts (rowid, text) VALUES (?, ?)", (memory_id, memory.text)
                )
                records.append(
                    MemoryRecord(
                        id=memory_id,
                        namespace=memory.namespace,
                        session_id=memory.session_id,
                        message_id=memory.message_id,
                        role=memory.role,
                        text=memory.text,
                        created_at=memory.created_at,
                        importance=memory.importance,
                        embedding_model=memory.embedding_model,
                    )
                )
        return records

    def get(self, memory_id: int) -> MemoryRecord | None:
        rows = self._db.query(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ?", (memory_id,))
        return _memory_from_row(rows[0]) if rows else None

    def many(self, ids: Collection[int]) -> dict[int, MemoryRecord]:
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = self._db.query(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id IN ({marks})", tuple(ids)
        )
        return {row["id"]: _memory_from_row(row) for row in rows}

    def recent(
        self, where: MemoryFilter, *, limit: int = 50, offset: int = 0
    ) -> list[MemoryRecord]:
        """Memories, newest first."""
        condition, params = where.sql()
        rows = self._db.query(
            f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE {condition}"
            " ORDER BY m.created_at DESC, m.id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_memory_from_row(row) for row in rows]

    def ids(self, where: MemoryFilter) -> list[int]:
        condition, params = where.sql()
        return [
            row[0]
            for row in self._db.query(
                f"SELECT m.id FROM memories m WHERE {condition}", tuple(params)
            )
        ]

    def all_namespaces(self) -> list[str]:
        return [row[0] for row in self._db.query("SELECT DISTINCT namespace FROM memories")]

    def counts(self, namespace: str | None = None) -> dict[str | None, int]:
        """How many memories each vector space holds (None: not embedded)."""
        condition = "" if namespace is None else " WHERE namespace = ?"
        rows = self._db.query(
            f"SELECT embedding_model, COUNT(*) FROM memories{condition} GROUP BY embedding_model",
            () if namespace is None else (namespace,),
        )
        return {row[0]: int(row[1]) for row in rows}

    def vectors(self, namespace: str, embedding_model: str) -> StoredVectors:
        rows = self._db.query(
            "SELECT id, embedding, session_id, created_at FROM memories"
            " WHERE namespace = ? AND embedding_model = ? AND embedding IS NOT NULL ORDER BY id",
            (namespace, embedding_model),
        )
        return StoredVectors(
            ids=[row[0] for row in rows],
            blobs=[row[1] for row in rows],
            session_ids=[row[2] for row in rows],
            created_at=[row[3] for row in rows],
        )

    def fingerprint(self, namespace: str, embedding_model: str) -> tuple[int, int]:
        """(count, highest id) of a namespace's vectors in a space: what a cached index of
        them compares to notice memories added or deleted by another path or process."""
        rows = self._db.query(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM memories WHERE namespace = ?"
            " AND embedding_model = ? AND embedding IS NOT NULL",
            (namespace, embedding_model),
        )
        return int(rows[0][0]), int(rows[0][1])

    def vectors_of_messages(
        self, message_ids: Collection[int], embedding_model: str
    ) -> dict[int, bytes]:
        """Stored embeddings of messages, by message id, where they are in this space."""
        return self._embeddings_by("message_id", message_ids, embedding_model)

    def embeddings(self, ids: Collection[int], embedding_model: str) -> dict[int, bytes]:
        """Stored embeddings of memories, by memory id, where they are in this space."""
        return self._embeddings_by("id", ids, embedding_model)

    def _embeddings_by(
        self, key: Literal["id", "message_id"], values: Collection[int], embedding_model: str
    ) -> dict[int, bytes]:
        if not values:
            return {}
        marks = ", ".join("?" for _ in values)
        rows = self._db.query(
            f"SELECT {key}, embedding FROM memories WHERE {key} IN ({marks})"
            " AND embedding_model = ? AND embedding IS NOT NULL",
            (*values, embedding_model),
        )
        return {row[0]: row[1] for row in rows}

    def stale_memories(self, embedding_model: str) -> list[MemoryRecord]:
        """Memories with no embedding in this space (none yet, or another model's)."""
        rows = self._db.query(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE embedding_model IS NOT ?"
            " OR embedding IS NULL ORDER BY id",
            (embedding_model,),
        )
        return [_memory_from_row(row) for row in rows]

    def keyword_search(
        self, where: MemoryFilter, terms: Sequence[str], *, limit: int
    ) -> list[tuple[int, float]]:
        """(memory id, relevance ≥ 0) of the memories matching any term, best first.

        Relevance is FTS5's BM25 with the sign turned round (larger is better)."""
        if not terms:
            return []
        match = " OR ".join(_phrase(term) for term in terms)
        condition, params = where.sql()
        try:
            rows = self._db.query(
                "SELECT m.id, -bm25(memories_fts) AS relevance FROM memories_fts"
                " JOIN memories m ON m.id = memories_fts.rowid"
                f" WHERE memories_fts MATCH ? AND {condition}"
                " ORDER BY bm25(memories_fts) LIMIT ?",
                (match, *params, limit),
            )
        except sqlite3.OperationalError:  # a query FTS5 cannot parse matches nothing
            return []
        return [(int(row[0]), max(float(row[1]), 0.0)) for row in rows]

    def term_coverage(self, ids: Collection[int], terms: Sequence[str]) -> dict[int, float]:
        """For each memory, the share of `terms` it contains (matched as FTS5 matches them,
        stemmed), from 0 to 1."""
        if not ids or not terms:
            return dict.fromkeys(ids, 0.0)
        marks = ", ".join("?" for _ in ids)
        found = dict.fromkeys(ids, 0)
        for term in terms:
            rows = self._db.query(
                f"SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? AND rowid IN ({marks})",
                (_phrase(term), *ids),
            )
            for row in rows:
                found[row[0]] += 1
        return {memory_id: count / len(terms) for memory_id, count in found.items()}

    def set_embeddings(self, updates: Sequence[tuple[int, bytes, str]]) -> None:
        """(memory id, embedding, vector space) for memories embedded again."""
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE memories SET embedding = ?, embedding_model = ? WHERE id = ?",
                [(blob, model, memory_id) for memory_id, blob, model in updates],
            )

    def forget(self, ids: Collection[int]) -> list[MemoryRecord]:
        """Delete memories for good: rows, keyword entries, and the summaries that drew on
        their messages (rebuilt without them when next needed). Their messages stay in
        their sessions but are never remembered again."""
        records = list(self.many(ids).values())
        if not records:
            return []
        memory_ids = [record.id for record in records]
        message_ids = {record.message_id for record in records if record.message_id is not None}
        marks = ", ".join("?" for _ in memory_ids)
        with self._db.transaction() as conn:
            conn.execute(f"DELETE FROM memories_fts WHERE rowid IN ({marks})", memory_ids)
            conn.execute(f"DELETE FROM memories WHERE id IN ({marks})", memory_ids)
            if message_ids:
                message_marks = ", ".join("?" for _ in message_ids)
                conn.execute(
                    f"UPDATE messages SET remember = 0 WHERE id IN ({message_marks})",
                    tuple(message_ids),
                )
                self._drop_summaries_quoting(conn, message_ids)
            # Merge the keyword index's segments so that no deleted text lingers in them.
            conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")
        self._db.checkpoint()
        return records

    @staticmethod
    def _drop_summaries_quoting(conn: sqlite3.Connection, message_ids: set[int]) -> None:
        for row in conn.execute("SELECT session_id, source_ids FROM summaries").fetchall():
            if message_ids & set(json.loads(row["source_ids"])):
                conn.execute("DELETE FROM summaries WHERE session_id = ?", (row["session_id"],))

    # --- catch-up ----------------------------------------------------------------------------
    def pending_messages(self, limit: int = 256) -> list[PendingMessage]:
        """Stored user and assistant messages not yet remembered, oldest first."""
        rows = self._db.query(
            "SELECT msg.id, msg.session_id, s.namespace, msg.role, msg.content, msg.created_at"
            " FROM messages msg JOIN sessions s ON s.id = msg.session_id"
            " LEFT JOIN memories m ON m.message_id = msg.id"
            " WHERE m.id IS NULL AND msg.remember = 1 AND msg.role IN ('user', 'assistant')"
            " AND length(trim(msg.content)) > 0 ORDER BY msg.id LIMIT ?",
            (limit,),
        )
        return [PendingMessage(*row) for row in rows]

    def skip_messages(self, message_ids: Collection[int]) -> None:
        """Mark messages as never to be remembered (a turn that opted out)."""
        if not message_ids:
            return
        marks = ", ".join("?" for _ in message_ids)
        with self._db.transaction() as conn:
            conn.execute(
                f"UPDATE messages SET remember = 0 WHERE id IN ({marks})", tuple(message_ids)
            )

    # --- summaries ---------------------------------------------------------------------------
    def summary(self, session_id: str) -> SummaryRecord | None:
        rows = self._db.query("SELECT * FROM summaries WHERE session_id = ?", (session_id,))
        if not rows:
            return None
        data = dict(rows[0])
        data["source_ids"] = json.loads(data["source_ids"])
        return SummaryRecord(**data)

    def save_summary(self, summary: SummaryRecord) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO summaries (session_id, through_message_id, text,"
                " source_ids, method, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    summary.session_id,
                    summary.through_message_id,
                    summary.text,
                    json.dumps(summary.source_ids),
                    summary.method,
                    summary.created_at,
                ),
            )


def _phrase(term: str) -> str:
    """A term as an FTS5 string (quoted), so no word of the user's is read as syntax."""
    return '"' + term.replace('"', '""') + '"'


def _memory_from_row(row: sqlite3.Row) -> MemoryRecord:
    return MemoryRecord(**dict(row))
