"""Clustering summaries: K-means over real MiniLM embeddings separates a conversation's topics."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hoshikage.conversation.summary import (
    HistoryMessage,
    Summarizer,
    SummaryOptions,
    cluster_count,
    group_turns,
    kmeans,
    representatives,
)
from hoshikage.engine import Engine, LoadOptions
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.embedder import EngineEmbedder
from hoshikage.store import Database, MemoryStore, NewMessage, SessionStore

TOPICS: dict[str, list[str]] = {
    "cooking": [
        "How long should I {} the {} for dinner?",
        "Can I {} the {} with garlic and butter?",
        "What temperature do I need to {} {} in the oven?",
    ],
    "astronomy": [
        "Is {} visible through a small telescope near {}?",
        "How far is {} from {} in light years?",
        "When does {} rise above the horizon close to {}?",
    ],
    "football": [
        "Who scored for {} in the match against {}?",
        "Why did {} lose the derby to {} last season?",
        "Which striker did {} sign from {} this summer?",
    ],
}
SLOTS: dict[str, tuple[list[str], list[str]]] = {
    "cooking": (
        ["boil", "roast", "simmer", "bake", "steam"],
        ["potatoes", "carrots", "chicken thighs", "salmon", "rice", "lentils", "pumpkin"],
    ),
    "astronomy": (
        ["Jupiter", "the Andromeda galaxy", "Mars", "Saturn's rings", "the Orion nebula"],
        ["the Moon", "Sirius", "the Pleiades", "Venus", "Betelgeuse", "Polaris", "Vega"],
    ),
    "football": (
        ["Arsenal", "Liverpool", "Real Madrid", "Juventus", "Bayern", "Ajax"],
        ["Chelsea", "Barcelona", "Milan", "Dortmund", "Porto", "Celtic", "Napoli"],
    ),
}
ANSWERS = {
    "cooking": "Keep the heat moderate and season it well before serving.",
    "astronomy": "Look for it on a clear night away from city lights with binoculars.",
    "football": "The team pressed high and the goal came from a late counter attack.",
}


def three_topic_conversation(turns: int = 300) -> list[tuple[str, str, str]]:
    """(topic, question, answer) turns, the topics mixed in time as a real chat drifts."""
    chooser = random.Random(7)
    conversation = []
    for index in range(turns):
        topic = list(TOPICS)[index % 3]
        template = chooser.choice(TOPICS[topic])
        first, second = SLOTS[topic]
        question = template.format(chooser.choice(first), chooser.choice(second))
        conversation.append((topic, question, ANSWERS[topic]))
    chooser.shuffle(conversation)
    return conversation


def test_a_300_turn_conversation_about_three_topics_clusters_by_topic(
    minilm: EngineEmbedder,
) -> None:
    conversation = three_topic_conversation()
    k = cluster_count(len(conversation), SummaryOptions())  # 300 / 100, as designed
    assert k == 3
    vectors = np.asarray(
        minilm.embed([f"{question}\n{answer}" for _, question, answer in conversation])
    )
    labels, centroids = kmeans(vectors, k)
    assert centroids.shape == (3, 384)
    majorities = []
    for cluster in range(k):
        topics = Counter(conversation[i][0] for i in np.flatnonzero(labels == cluster))
        main, count = topics.most_common(1)[0]
        assert count / sum(topics.values()) >= 0.95, (cluster, topics)
        majorities.append(main)
    assert sorted(majorities) == sorted(TOPICS)  # one cluster per topic

    # The excerpts come from every topic, nearest their centroid first, in time order.
    chosen = representatives(vectors, k, lambda picked: len(picked) <= 9)
    assert chosen == sorted(chosen) and len(chosen) == 9
    assert Counter(conversation[i][0] for i in chosen) == {t: 3 for t in TOPICS}


@pytest.mark.parametrize(
    ("turns", "expected"), [(1, 1), (99, 1), (150, 1), (300, 3), (1999, 19), (5000, 20)]
)
def test_cluster_count_is_clamped(turns: int, expected: int) -> None:
    assert cluster_count(turns, SummaryOptions()) == expected
    assert cluster_count(turns, SummaryOptions(min_clusters=2, max_clusters=4)) == min(
        max(expected, 2), 4, turns
    )


def test_turns_leave_out_what_opted_out_of_memory() -> None:
    messages = [
        HistoryMessage("user", "a", 1),
        HistoryMessage("assistant", "b", 2),
        HistoryMessage("user", "secret", 3, remember=False),
        HistoryMessage("assistant", "hush", 4, remember=False),
        HistoryMessage("user", "c", 5),
    ]
    assert [turn.ids for turn in group_turns(messages)] == [[1, 2], [5]]


@pytest.fixture(scope="module")
def engine(stories_model: Path) -> Iterator[Engine]:
    with Engine(stories_model, LoadOptions(n_ctx=1024, n_threads=1)) as engine:
        yield engine


def stored_conversation(database: Database, turns: int) -> tuple[str, list[HistoryMessage]]:
    sessions = SessionStore(database)
    session = sessions.create()
    for _, question, answer in three_topic_conversation(turns):
        sessions.append(session.id, [NewMessage("user", question), NewMessage("assistant", answer)])
    history = [HistoryMessage(m.role, m.content, m.id) for m in sessions.messages(session.id)]
    return session.id, history


def test_with_an_embedding_model_the_summary_draws_on_every_cluster(
    engine: Engine, database: Database, minilm: EngineEmbedder
) -> None:
    session_id, history = stored_conversation(database, 300)
    store = MemoryStore(database)
    bank = MemoryBank(store, minilm)
    summarizer = Summarizer(engine, store, bank, SummaryOptions(max_tokens=64))
    summary = summarizer.update(session_id, None, history, max_tokens=64)
    assert summary.method == "clusters"
    assert summary.through_message_id == history[-1].id
    assert summary.text  # written by the model (stories260K: a story, but a real generation)
    questions = {m.id: m.content for m in history if m.role == "user"}
    picked = [questions[i] for i in summary.source_ids if i in questions]
    topics = {
        topic
        for text in picked
        for topic, templates in TOPICS.items()
        if any(text.startswith(t.split("{}")[0]) for t in templates)
    }
    assert topics == set(TOPICS)
    assert store.summary(session_id) == summary


def test_without_an_embedding_model_the_oldest_turns_are_summarised_in_order(
    engine: Engine, database: Database
) -> None:
    session_id, history = stored_conversation(database, 40)
    store = MemoryStore(database)
    summarizer = Summarizer(engine, store, None, SummaryOptions(max_tokens=32))
    summary = summarizer.update(session_id, None, history, max_tokens=32)
    assert summary.method == "oldest"
    ids = [m.id for m in history]
    assert summary.source_ids == ids[: len(summary.source_ids)]  # a prefix, in order
    assert 0 < len(summary.source_ids) < len(ids)  # the window limits the excerpts
    # Updating: the summary so far is merged with excerpts of the newly aged turns.
    more = [*history, HistoryMessage("user", "One more question about Mars.", 10_000)]
    updated = summarizer.update(session_id, summary, more, max_tokens=32)
    assert updated.through_message_id == 10_000
    assert set(summary.source_ids) < set(updated.source_ids)
