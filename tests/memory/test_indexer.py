"""Remembering off the request path: the store is the queue, so nothing stored is missed."""

from __future__ import annotations

from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.embedder import FunctionEmbedder
from hoshikage.memory.indexer import MemoryIndexer
from hoshikage.store import MemoryFilter, NewMessage, SessionStore
from tests.memory.conftest import BankFactory


def remembered(bank: MemoryBank) -> list[str]:
    return sorted(record.text for record in bank.store.recent(MemoryFilter("local")))


def test_turns_stored_before_a_crash_are_remembered_at_the_next_start(
    make_bank: BankFactory, sessions: SessionStore
) -> None:
    bank = make_bank(None)
    session = sessions.create()
    # Stored, then the process died before the indexer got to it.
    sessions.append(session.id, [NewMessage("user", "one"), NewMessage("assistant", "two")])
    indexer = MemoryIndexer(bank)  # a new process: it catches up first
    try:
        assert indexer.flush(timeout=30)
        assert remembered(bank) == ["one", "two"]
        sessions.append(session.id, [NewMessage("user", "three")])
        indexer.notify()
        assert indexer.flush(timeout=30)
        assert remembered(bank) == ["one", "three", "two"]
        assert indexer.indexed == 3
    finally:
        indexer.close()


def test_opted_out_turns_are_never_remembered(
    make_bank: BankFactory, sessions: SessionStore
) -> None:
    bank = make_bank(None)
    session = sessions.create()
    sessions.append(
        session.id,
        [
            NewMessage("user", "secret", remember=False),
            NewMessage("assistant", "ok", remember=False),
        ],
    )
    sessions.append(session.id, [NewMessage("user", "public")])
    assert bank.catch_up() == 1
    assert remembered(bank) == ["public"]


def test_a_failing_batch_does_not_stop_the_indexer(
    make_bank: BankFactory, sessions: SessionStore
) -> None:
    calls: list[int] = []

    def flaky(batch: list[str]) -> list[list[float]]:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model still loading")
        return [[1.0, 0.0] for _ in batch]

    bank = make_bank(FunctionEmbedder("flaky/x/2/1", flaky))
    session = sessions.create()
    indexer = MemoryIndexer(bank)
    try:
        sessions.append(session.id, [NewMessage("user", "first")])
        indexer.notify()
        assert indexer.flush(timeout=30)
        sessions.append(session.id, [NewMessage("user", "second")])
        indexer.notify()
        assert indexer.flush(timeout=30)
    finally:
        indexer.close()
    assert remembered(bank) == ["first", "second"]
    # The first was kept by keyword when embedding failed; `reindex` embeds it later.
    assert bank.status()["needs_reindex"] == 1
