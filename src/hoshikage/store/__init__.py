"""Persistent state in one SQLite file: sessions and their messages (more tables later)."""

from hoshikage.store.database import Database, StoreError
from hoshikage.store.sessions import MessageRecord, NewMessage, SessionRecord, SessionStore

__all__ = ["Database", "MessageRecord", "NewMessage", "SessionRecord", "SessionStore", "StoreError"]
