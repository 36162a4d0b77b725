"""Fixtures for driving the real program: a chat under a pseudo-terminal, and the store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hoshikage.store import Database, SessionStore
from tests.cli.terminal import Chat, child_env

SpawnChat = Callable[..., Chat]


@pytest.fixture
def spawn_chat(isolated_env: Path) -> Iterator[SpawnChat]:
    """Start `hoshikage chat ARGS` under a pty (isolated data dir); killed and checked after."""
    chats: list[Chat] = []

    def spawn(*args: str, **env: str) -> Chat:
        chat = Chat(args, child_env(**env))
        chats.append(chat)
        return chat

    yield spawn
    for chat in chats:
        chat.kill()
    for chat in chats:
        chat.assert_no_traceback()


@pytest.fixture
def open_store(isolated_env: Path) -> Iterator[Callable[[], SessionStore]]:
    """Open the chat's SQLite store (after the chat wrote it); closed at teardown."""
    databases: list[Database] = []

    def open_() -> SessionStore:
        database = Database(isolated_env / "data" / "hoshikage.db")
        databases.append(database)
        return SessionStore(database)

    yield open_
    for database in databases:
        database.close()
