"""Conversation: turns through the real engine, stored atomically, resumed with their settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.conversation.chat import Conversation, sampling_from_dict, sampling_to_dict
from hoshikage.engine import Engine, LoadOptions, SamplingParams
from hoshikage.store import Database, SessionStore

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def engine(stories_model: Path) -> Iterator[Engine]:
    with Engine(stories_model, LoadOptions(n_ctx=512)) as loaded:
        yield loaded


@pytest.fixture
def sessions(tmp_path: Path) -> SessionStore:
    return SessionStore(Database(tmp_path / "store.db"))


def test_a_committed_turn_is_stored_and_becomes_history(
    engine: Engine, sessions: SessionStore
) -> None:
    conversation = Conversation(sessions, system_prompt=None, params=GREEDY, model_label="s")
    assert conversation.session is None  # nothing stored before the first answer
    turn = conversation.start_turn(engine, "Once upon a time")
    turn.generation.wait()
    conversation.commit(turn)
    assert conversation.session is not None
    stored = sessions.messages(conversation.session.id)
    assert [(m.role, m.content) for m in stored] == [
        ("user", "Once upon a time"),
        ("assistant", turn.generation.text),
    ]
    assert stored[1].completion_tokens == 12
    assert stored[1].finish_reason == "length"
    assert conversation.stats.turns == 1
    # The next turn's prompt is the history plus the new message, and reuses the KV cache.
    second = conversation.start_turn(engine, "Then")
    finish = second.generation.wait()
    assert finish.usage.cached_prompt_tokens > 0


def test_resume_restores_history_system_prompt_and_params(
    engine: Engine, sessions: SessionStore
) -> None:
    params = SamplingParams(temperature=0.3, top_k=7, max_tokens=5, stop=("END",))
    first = Conversation(sessions, system_prompt="Be brief.", params=params)
    turn = first.start_turn(engine, "Hello")
    turn.generation.wait()
    first.commit(turn)
    assert first.session is not None
    resumed = Conversation.resume(
        sessions, sessions.get(first.session.id), defaults=SamplingParams()
    )
    assert resumed.system_prompt == "Be brief."
    assert resumed.params == params
    assert [m.content for m in resumed.history] == ["Hello", turn.generation.text]


def test_explicit_overrides_win_over_the_stored_session(sessions: SessionStore) -> None:
    conversation = Conversation(sessions, system_prompt="old", params=GREEDY)
    conversation.ensure_saved()
    conversation.apply_overrides(
        {"temperature": 0.5, "top_p": None, "stop": ["x"], "system": "new", "model": "m"}
    )
    assert conversation.params.temperature == 0.5
    assert conversation.params.top_p == GREEDY.top_p  # a flag not given changes nothing
    assert conversation.params.stop == ("x",)
    assert conversation.system_prompt == "new"
    assert conversation.session is not None
    stored = sessions.get(conversation.session.id)
    assert stored.params["temperature"] == 0.5
    assert stored.system_prompt == "new"


def test_saved_params_round_trip_and_ignore_unknown_keys() -> None:
    params = SamplingParams(seed=4, stop=("a", "b"))
    data = {**sampling_to_dict(params), "from_the_future": 1}
    assert sampling_from_dict(data, SamplingParams()) == params
