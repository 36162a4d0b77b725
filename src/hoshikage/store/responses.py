"""Stored Responses API objects, each in the session that holds its conversation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hoshikage.store.database import Database, StoreError
from hoshikage.store.sessions import owner_of


@dataclass(frozen=True)
class ResponseRecord:
    id: str
    session_id: str
    namespace: str
    created_at: float
    body: dict[str, Any]
    input_items: list[Any]


class ResponseStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def save(
        self,
        response_id: str,
        *,
        session_id: str,
        namespace: str,
        body: dict[str, Any],
        input_items: list[Any],
    ) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses"
                " (id, session_id, namespace, created_at, body, input_items)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    response_id,
                    session_id,
                    namespace,
                    time.time(),
                    json.dumps(body, ensure_ascii=False),
                    json.dumps(input_items, ensure_ascii=False),
                ),
            )

    def get(self, response_id: str, *, owner: str) -> ResponseRecord:
        """The response, if the owner's namespace (or one of its users') stored it."""
        rows = self._db.query(
            "SELECT id, session_id, namespace, created_at, body, input_items FROM responses"
            " WHERE id = ?",
            (response_id,),
        )
        if not rows or owner_of(rows[0]["namespace"]) != owner:
            raise StoreError(f"no response with id {response_id!r}")
        row = rows[0]
        return ResponseRecord(
            row["id"],
            row["session_id"],
            row["namespace"],
            row["created_at"],
            json.loads(row["body"]),
            json.loads(row["input_items"]),
        )

    def delete(self, response_id: str, *, owner: str) -> None:
        self.get(response_id, owner=owner)  # not found is an error, another owner's too
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))
