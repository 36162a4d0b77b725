"""The memory bank with the real MiniLM model: recall, thresholds, namespaces, forgetting."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.embedder import EngineEmbedder, FunctionEmbedder
from hoshikage.store import Database, MemoryFilter, NewMessage, SessionStore
from tests.memory.conftest import BankFactory

# The threshold the context builder uses by default (setting memory_min_score).
MIN_SCORE = 0.25


def tell(sessions: SessionStore, bank: MemoryBank, text: str, namespace: str = "local") -> str:
    """A conversation in which the user says `text`; remembered as the indexer would."""
    session = sessions.create(namespace=namespace)
    sessions.append(
        session.id,
        [NewMessage("user", text), NewMessage("assistant", "I will keep that in mind.")],
    )
    bank.catch_up()
    return session.id


def texts(bank: MemoryBank, query: str, namespace: str = "local", **options: object) -> list[str]:
    where = MemoryFilter(namespace=namespace)
    return [hit.record.text for hit in bank.search(query, where, **options)]  # type: ignore[arg-type]


def test_a_fact_told_in_one_session_is_recalled_in_another(
    make_bank: BankFactory, minilm: EngineEmbedder, sessions: SessionStore
) -> None:
    bank = make_bank(minilm)
    told_in = tell(sessions, bank, "My cat is called Tama.")
    tell(sessions, bank, "I work as a nurse in Osaka.")
    tell(sessions, bank, "The meeting with the landlord is on Friday at 3pm.")
    asking_in = sessions.create().id
    hits = bank.search(
        "What is my cat's name?",
        MemoryFilter("local", exclude_session=asking_in),
        limit=5,
        min_score=MIN_SCORE,
    )
    assert hits[0].record.text == "My cat is called Tama."
    assert hits[0].record.session_id == told_in
    assert hits[0].similarity is not None and hits[0].similarity > 0.5
    assert hits[0].keyword == 0.5  # "cat" of "cat", "name"
    assert "I work as a nurse in Osaka." not in [hit.record.text for hit in hits]


def test_an_unrelated_question_pulls_nothing_above_the_threshold(
    make_bank: BankFactory, minilm: EngineEmbedder, sessions: SessionStore
) -> None:
    bank = make_bank(minilm)
    for fact in ("My cat is called Tama.", "I'm allergic to peanuts.", "My car is a blue Honda."):
        tell(sessions, bank, fact)
    for question in ("How do I bake sourdough bread?", "Explain quantum entanglement."):
        assert texts(bank, question, limit=5, min_score=MIN_SCORE) == []
        assert texts(bank, question, limit=5)  # there are memories; none is relevant


def test_namespaces_never_see_each_other(
    make_bank: BankFactory, minilm: EngineEmbedder, sessions: SessionStore
) -> None:
    bank = make_bank(minilm)
    tell(sessions, bank, "My cat is called Tama.", namespace="key:alice")
    fact = bank.add_fact("key:alice", "Alice's locker code is 4711.")
    assert texts(bank, "What is my cat's name?", "key:alice", limit=5)
    assert texts(bank, "What is my cat's name?", "key:bob", limit=5) == []
    assert texts(bank, "locker code", "key:bob", limit=5) == []
    assert bank.get("key:bob", fact.id) is None
    assert bank.forget("key:bob", [fact.id]) == []
    assert bank.get("key:alice", fact.id) == fact


def test_forget_removes_every_trace(
    make_bank: BankFactory, minilm: EngineEmbedder, database: Database, tmp_path: Path
) -> None:
    bank = make_bank(minilm)
    secret = "The spare key is under the third flowerpot."
    fact = bank.add_fact("local", secret)
    other = bank.add_fact("local", "I like green tea.")
    assert texts(bank, "Where is the spare key?", limit=1) == [secret]
    assert [r.id for r in bank.forget("local", [fact.id])] == [fact.id]
    assert bank.get("local", fact.id) is None
    assert secret not in texts(bank, "Where is the spare key?", limit=10)
    where = MemoryFilter("local")
    assert bank.store.keyword_search(where, ["flowerpot"], limit=10) == []
    assert bank.store.recent(where) == [other]
    # Nothing of it is left on disk: rows, keyword index and write-ahead log are cleared.
    for path in tmp_path.glob("hoshikage.db*"):
        assert b"flowerpot" not in path.read_bytes(), path.name


def test_forgotten_turns_are_never_remembered_again(
    make_bank: BankFactory, minilm: EngineEmbedder, sessions: SessionStore
) -> None:
    bank = make_bank(minilm)
    session = tell(sessions, bank, "My cat is called Tama.")
    forgotten = bank.forget_where(MemoryFilter("local", session_id=session))
    assert len(forgotten) == 2  # the user's message and the answer
    assert bank.catch_up() == 0
    assert texts(bank, "What is my cat's name?", limit=5) == []
    assert sessions.messages(session)[0].content == "My cat is called Tama."


def test_filters_by_session_and_time(
    make_bank: BankFactory, minilm: EngineEmbedder, sessions: SessionStore
) -> None:
    bank = make_bank(minilm)
    first = tell(sessions, bank, "My cat is called Tama.")
    second = tell(sessions, bank, "My cat loves tuna.")
    question = "Tell me about my cat."
    both = bank.search(question, MemoryFilter("local"), limit=10, min_score=MIN_SCORE)
    assert {hit.record.session_id for hit in both} == {first, second}
    only = bank.search(question, MemoryFilter("local", session_id=second), limit=10)
    assert {hit.record.session_id for hit in only} == {second}
    other = bank.search(question, MemoryFilter("local", exclude_session=second), limit=10)
    assert second not in {hit.record.session_id for hit in other}
    cut = max(r.created_at for r in bank.store.recent(MemoryFilter("local", session_id=first)))
    later = bank.search(question, MemoryFilter("local", since=cut + 1e-6), limit=10)
    assert first not in {hit.record.session_id for hit in later}


def test_keyword_mode_without_an_embedding_model(
    make_bank: BankFactory, sessions: SessionStore
) -> None:
    bank = make_bank(None)
    assert bank.mode == "keyword"
    assert "keywords" in bank.status()["note"]
    tell(sessions, bank, "My cat is called Tama.")
    tell(sessions, bank, "Cats and dogs need different food.")  # "cats" stems to "cat"
    hits = bank.search("What is my cat's name?", MemoryFilter("local"), limit=5)
    assert hits[0].record.text == "My cat is called Tama."
    assert hits[0].similarity is None and hits[0].score == 0.5
    assert texts(bank, "sourdough bread", limit=5) == []


def test_a_new_embedding_model_needs_reindex_and_never_mixes_spaces(
    make_bank: BankFactory, minilm: EngineEmbedder, sessions: SessionStore
) -> None:
    keyword_bank = make_bank(None)
    tell(sessions, keyword_bank, "My cat is called Tama.")
    bank = make_bank(minilm)
    status = bank.status()
    assert status["mode"] == "semantic" and status["needs_reindex"] == 2
    # Not embedded yet: found by its keyword, with no similarity from another space.
    (hit,) = bank.search("cat", MemoryFilter("local"), limit=5, min_score=0.05)
    assert hit.similarity == 0.0
    assert bank.search("feline pet", MemoryFilter("local"), limit=5, min_score=MIN_SCORE) == []
    assert bank.reindex() == 2
    assert "needs_reindex" not in bank.status()
    assert texts(bank, "feline pet", limit=1, min_score=MIN_SCORE) == ["My cat is called Tama."]
    # Another model: the vectors of MiniLM's space are not compared with its vectors.
    other = FunctionEmbedder("other-model/bert/384/1", lambda batch: minilm_like(minilm, batch))
    renamed = make_bank(other)
    assert renamed.status()["needs_reindex"] == 2
    assert texts(renamed, "feline pet", limit=5, min_score=MIN_SCORE) == []


def minilm_like(minilm: EngineEmbedder, batch: list[str]) -> list[list[float]]:
    return [vector.tolist() for vector in minilm.embed(batch)]


def test_an_embedding_failure_keeps_the_memory_by_keyword(
    make_bank: BankFactory, sessions: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(batch: list[str]) -> list[list[float]]:
        raise RuntimeError("the embedding model is not loaded")

    bank = make_bank(FunctionEmbedder("broken/bert/384/1", broken))
    with caplog.at_level("WARNING", logger="hoshikage.memory.bank"):
        tell(sessions, bank, "My cat is called Tama.")
    assert "memory reindex" in caplog.text
    assert bank.status()["needs_reindex"] == 2
    assert bank.store.keyword_search(MemoryFilter("local"), ["tama"], limit=5)


def test_export_lists_memories_without_vectors(
    make_bank: BankFactory, minilm: EngineEmbedder
) -> None:
    bank = make_bank(minilm)
    bank.add_fact("local", "My cat is called Tama.")
    bank.add_fact("key:x", "Another namespace's fact.")
    document = bank.export("local")
    assert document["format"] == "hoshikage-memory"
    assert [m["text"] for m in document["memories"]] == ["My cat is called Tama."]
    assert "embedding" not in document["memories"][0]
    assert len(bank.export()["memories"]) == 2
