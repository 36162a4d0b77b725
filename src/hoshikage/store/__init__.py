"""Persistent state in one SQLite file: sessions, messages, models, memories and summaries."""

from hoshikage.store.database import Database, StoreError
from hoshikage.store.memories import (
    MemoryFilter,
    MemoryRecord,
    MemoryStore,
    NewMemory,
    PendingMessage,
    SummaryRecord,
)
from hoshikage.store.sessions import (
    MessageRecord,
    NewMessage,
    SessionNameTaken,
    SessionRecord,
    SessionStore,
)

__all__ = [
    "Database",
    "MemoryFilter",
    "MemoryRecord",
    "MemoryStore",
    "MessageRecord",
    "NewMemory",
    "NewMessage",
    "PendingMessage",
    "SessionNameTaken",
    "SessionRecord",
    "SessionStore",
    "StoreError",
    "SummaryRecord",
]
