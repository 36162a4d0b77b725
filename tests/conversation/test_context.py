"""The context builder on a real model: the window is never exceeded, and nothing silently.

stories260K (a tiny real llama, no chat template) with small windows, so that a few dozen
turns outgrow it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hoshikage.conversation.context import (
    MEMORY_HEADING,
    SUMMARY_HEADING,
    ContextBuilder,
    ContextOptions,
)
from hoshikage.conversation.summary import HistoryMessage, Summarizer, SummaryOptions
from hoshikage.engine import (
    ChatMessage,
    ContextOverflowError,
    Engine,
    EngineError,
    Generation,
    LoadOptions,
    SamplingParams,
)
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.embedder import EngineEmbedder
from hoshikage.store import Database, MemoryStore, NewMessage, SessionStore

SYSTEM = "You tell short stories."
ANSWER = SamplingParams(temperature=0.0, max_tokens=32)


@pytest.fixture(scope="module")
def engine(stories_model: Path) -> Iterator[Engine]:
    with Engine(stories_model, LoadOptions(n_ctx=512, n_threads=1)) as engine:
        yield engine


def story_turns(count: int, start: int = 0) -> list[tuple[str, str]]:
    return [
        (
            f"Tell me story {i} about a little dog in the park.",
            f"Once upon a time a little dog called Rex{i} ran in the park and found a ball.",
        )
        for i in range(start, start + count)
    ]


def stored_history(
    sessions: SessionStore, session_id: str, turns: Sequence[tuple[str, str]]
) -> list[HistoryMessage]:
    for question, answer in turns:
        sessions.append(session_id, [NewMessage("user", question), NewMessage("assistant", answer)])
    return [
        HistoryMessage(m.role, m.content, m.id, m.remember) for m in sessions.messages(session_id)
    ]


def plain_builder(engine: Engine) -> ContextBuilder:
    return ContextBuilder(
        engine, bank=None, summarizer=None, options=ContextOptions(memory=False, summaries=False)
    )


@pytest.mark.parametrize("turns", [0, 1, 5, 12, 40])
def test_never_exceeds_the_window_and_keeps_system_and_newest(engine: Engine, turns: int) -> None:
    history = [
        HistoryMessage(role, text)
        for question, answer in story_turns(turns)
        for role, text in (("user", question), ("assistant", answer))
    ]
    built = plain_builder(engine).build(
        system_prompt=SYSTEM,
        history=history,
        user_text="And then?",
        params=ANSWER,
        namespace="local",
        session_id=None,
    )
    assert engine.count_chat_tokens(built.messages) <= engine.n_ctx - ANSWER.max_tokens  # type: ignore[operator]
    assert built.messages[0] == ChatMessage("system", SYSTEM)
    assert built.messages[-1] == ChatMessage("user", "And then?")
    report = built.report
    assert report.history_messages + report.dropped_messages == len(history)
    assert report.history_messages == len(built.messages) - 2
    if report.history_messages:
        assert built.messages[1].role == "user"  # whole turns only
    if turns >= 12:
        assert report.dropped_messages > 0


def test_a_newest_message_too_long_for_the_window_is_an_error(engine: Engine) -> None:
    with pytest.raises(ContextOverflowError) as caught:
        plain_builder(engine).build(
            system_prompt=SYSTEM,
            history=[],
            user_text="word " * 600,
            params=ANSWER,
            namespace="local",
            session_id=None,
        )
    assert caught.value.n_ctx == 512 and caught.value.n_prompt_tokens > 480


def test_the_error_policy_refuses_instead_of_dropping(engine: Engine) -> None:
    history = [HistoryMessage("user", q) for q, _ in story_turns(30)]
    with pytest.raises(ContextOverflowError):
        plain_builder(engine).build(
            system_prompt=SYSTEM,
            history=history,
            user_text="And then?",
            params=ANSWER,
            namespace="local",
            session_id=None,
            drop_oldest=False,
        )


def test_relevant_memories_of_other_conversations_join_the_newest_message(
    engine: Engine, database: Database, minilm: EngineEmbedder
) -> None:
    sessions = SessionStore(database)
    bank = MemoryBank(MemoryStore(database), minilm)
    other = sessions.create()
    stored_history(sessions, other.id, [("My cat is called Tama.", "What a nice name.")])
    stored_history(sessions, other.id, [("I like green tea.", "Me too.")])
    bank.catch_up()
    this = sessions.create()
    history = stored_history(sessions, this.id, [("Hello.", "Hello there.")])
    builder = ContextBuilder(
        engine, bank=bank, summarizer=None, options=ContextOptions(summaries=False)
    )
    built = builder.build(
        system_prompt=SYSTEM,
        history=history,
        user_text="What is my cat's name?",
        params=ANSWER,
        namespace="local",
        session_id=this.id,
    )
    used = built.report.memories[0]
    assert used.text == "My cat is called Tama." and used.session_id == other.id
    assert "I like green tea." not in [memory.text for memory in built.report.memories]
    newest = built.messages[-1]
    assert newest.role == "user" and newest.content.startswith(MEMORY_HEADING)
    assert "My cat is called Tama." in newest.content
    assert newest.content.endswith("What is my cat's name?")
    assert built.messages[:-1] == [ChatMessage("system", SYSTEM), *(m.chat for m in history)]
    assert built.report.memory_mode == "semantic"
    # Opted out: no recall at all.
    private = builder.build(
        system_prompt=SYSTEM,
        history=history,
        user_text="What is my cat's name?",
        params=ANSWER,
        namespace="local",
        session_id=this.id,
        use_memory=False,
    )
    assert (
        private.report.memories == [] and private.messages[-1].content == "What is my cat's name?"
    )
    # A namespace of its own sees none of it.
    elsewhere = builder.build(
        system_prompt=SYSTEM,
        history=[],
        user_text="What is my cat's name?",
        params=ANSWER,
        namespace="key:someone-else",
        session_id=None,
    )
    assert elsewhere.report.memories == []


def test_the_memory_block_keeps_to_its_budget(
    engine: Engine, database: Database, minilm: EngineEmbedder
) -> None:
    bank = MemoryBank(MemoryStore(database), minilm)
    for i in range(5):
        bank.add_fact("local", f"My cat number {i} is called Tama{i} and loves fish.")

    def used(memory_tokens: int) -> int:
        builder = ContextBuilder(
            engine,
            bank=bank,
            summarizer=None,
            options=ContextOptions(summaries=False, memory_tokens=memory_tokens),
        )
        built = builder.build(
            system_prompt=None,
            history=[],
            user_text="What are my cats called?",
            params=ANSWER,
            namespace="local",
            session_id=None,
        )
        block = built.messages[-1].content.split("\n\n")[0]
        assert (
            engine.count_text_tokens(block) <= max(memory_tokens, 0) + 8
            or not built.report.memories
        )
        return len(built.report.memories)

    # However large its own budget, the block never takes over a third of the free window.
    assert 1 <= used(100) < used(1000) < 5
    assert used(0) == 0


class CountingModel:
    """The engine, counting the summaries it is asked to write (or failing to write one)."""

    def __init__(self, engine: Engine, *, fail: bool = False) -> None:
        self._engine = engine
        self._fail = fail
        self.summaries_written = 0

    @property
    def n_ctx(self) -> int:
        return self._engine.n_ctx

    def count_chat_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self._engine.count_chat_tokens(messages)

    def count_text_tokens(self, text: str) -> int:
        return self._engine.count_text_tokens(text)

    def answer_reserve(self, params: SamplingParams) -> int:
        return self._engine.answer_reserve(params)

    def chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        if self._fail:
            raise EngineError("the model was unloaded")
        self.summaries_written += 1
        return self._engine.chat(messages, params)


def summarising_builder(model: CountingModel, database: Database) -> ContextBuilder:
    store = MemoryStore(database)
    summarizer = Summarizer(model, store, None, SummaryOptions(max_tokens=48))
    return ContextBuilder(model, bank=None, summarizer=summarizer, options=ContextOptions())


def test_older_turns_are_summarised_once_and_the_summary_is_updated_as_more_age_out(
    engine: Engine, database: Database
) -> None:
    sessions = SessionStore(database)
    session = sessions.create(system_prompt=SYSTEM)
    model = CountingModel(engine)
    builder = summarising_builder(model, database)

    def turn(history: list[HistoryMessage]) -> tuple[list[ChatMessage], object]:
        built = builder.build(
            system_prompt=SYSTEM,
            history=history,
            user_text="And then?",
            params=ANSWER,
            namespace="local",
            session_id=session.id,
        )
        assert engine.count_chat_tokens(built.messages) <= engine.n_ctx - 32
        assert built.messages[-1] == ChatMessage("user", "And then?")
        return built.messages, built.report

    history = stored_history(sessions, session.id, story_turns(20))
    messages, report = turn(history)
    assert model.summaries_written == 1
    summary = report.summary  # type: ignore[attr-defined]
    assert summary is not None and summary.updated and summary.method == "oldest"
    stored = MemoryStore(database).summary(session.id)
    assert stored is not None and stored.through_message_id == summary.through_message_id
    assert messages[0].role == "system" and messages[0].content.startswith(SYSTEM)
    assert SUMMARY_HEADING in messages[0].content and stored.text in messages[0].content
    # Everything up to the summary's end is summarised, everything after it is word for word.
    kept = [m for m in history if (m.id or 0) > stored.through_message_id]
    assert messages[1:-1] == [m.chat for m in kept]
    assert report.dropped_messages == 0  # type: ignore[attr-defined]
    assert summary.summarized_messages + len(kept) == len(history)

    # One more turn fits beside the cached summary: it is not written again.
    history = stored_history(sessions, session.id, story_turns(1, start=20))
    _, report = turn(history)
    assert model.summaries_written == 1
    assert report.summary.updated is False  # type: ignore[attr-defined]

    # Many more: the summary is brought up to date, covering further.
    history = stored_history(sessions, session.id, story_turns(20, start=21))
    _, report = turn(history)
    assert model.summaries_written == 2
    later = MemoryStore(database).summary(session.id)
    assert later is not None and later.through_message_id > stored.through_message_id
    assert set(stored.source_ids) <= set(later.source_ids)


def test_a_summary_that_cannot_be_written_means_dropping_and_saying_so(
    engine: Engine, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    sessions = SessionStore(database)
    session = sessions.create()
    history = stored_history(sessions, session.id, story_turns(20))
    builder = summarising_builder(CountingModel(engine, fail=True), database)
    with caplog.at_level("WARNING", logger="hoshikage.conversation.context"):
        built = builder.build(
            system_prompt=SYSTEM,
            history=history,
            user_text="And then?",
            params=ANSWER,
            namespace="local",
            session_id=session.id,
        )
    assert "could not summarise" in caplog.text
    assert built.report.summary is None
    assert built.report.dropped_messages > 0
    assert built.report.history_messages + built.report.dropped_messages == len(history)
    assert engine.count_chat_tokens(built.messages) <= engine.n_ctx - 32


def test_a_client_sent_history_is_fitted_without_a_summary(
    engine: Engine, database: Database
) -> None:
    history = [
        HistoryMessage(role, text)
        for q, a in story_turns(20)
        for role, text in (("user", q), ("assistant", a))
    ]
    model = CountingModel(engine)
    built = summarising_builder(model, database).build(
        system_prompt=SYSTEM,
        history=history,
        user_text="And then?",
        params=ANSWER,
        namespace="local",
        session_id="some-session",
    )
    assert model.summaries_written == 0  # no stored ids to cache a summary against
    assert built.report.summary is None and built.report.dropped_messages > 0
    assert dataclasses.asdict(built.report)["dropped_messages"] == built.report.dropped_messages
