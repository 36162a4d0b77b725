"""The SQLite connection: WAL journal, foreign keys, migrations applied on open."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hoshikage.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store refused an operation; the message says why."""


class Database:
    """One SQLite file shared by the terminal chat and the server.

    Every write runs in its own transaction and is durable when the call returns
    (synchronous=FULL), so a crash or kill after a turn was acknowledged never loses it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        # Deleted content is overwritten, not left in free pages: forgetting really deletes.
        self._conn.execute("PRAGMA secure_delete=ON")
        # Migrations run with foreign keys off (a table rebuild's DROP must not cascade);
        # enforcement is on for everything after them.
        self._conn.execute("PRAGMA foreign_keys=OFF")
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self._conn.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements atomically: all of them are committed, or none."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file and empty it (after deletions,
        so that no copy of what was deleted stays behind in the log)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def applied_migrations(self) -> list[str]:
        return [
            row["name"] for row in self.query("SELECT name FROM schema_migrations ORDER BY rowid")
        ]

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (name TEXT PRIMARY KEY, applied_at REAL)"
            )
            done = {row["name"] for row in conn.execute("SELECT name FROM schema_migrations")}
            applied = False
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                applied = True
                log.info("applying store migration %s", name)
                for statement in filter(str.strip, sql.split(";")):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                    (name, time.time()),
                )
            # What SQLite's table-rebuild procedure asks for: no migration may leave a row
            # pointing at nothing (a violation rolls every migration of this open back).
            broken = conn.execute("PRAGMA foreign_key_check").fetchall() if applied else []
            if broken:
                raise StoreError(
                    f"a store migration broke {len(broken)} foreign key reference(s),"
                    f" the first in table {broken[0][0]}; nothing was changed"
                )
