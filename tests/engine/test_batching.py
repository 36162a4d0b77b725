"""Continuous batching: sequences decoded together give what each gives alone (greedy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.engine import Engine, LoadOptions, SamplingParams

PROMPTS = [
    "Once upon a time",
    "Lily and Ben went to the park. They saw a big dog and",
    "The sun",
    "One day, a little bird named Tweet flew over the tall green trees near the river, looking for",
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def solo(stories_model: Path) -> Iterator[Engine]:
    with Engine(stories_model, LoadOptions(n_ctx=256, parallel=1)) as engine:
        yield engine


@pytest.fixture(scope="module")
def batched(stories_model: Path) -> Iterator[Engine]:
    with Engine(stories_model, LoadOptions(n_ctx=256, parallel=4)) as engine:
        yield engine


@pytest.fixture(scope="module")
def alone(solo: Engine) -> dict[str, str]:
    """Each prompt's greedy answer with nothing else running."""
    answers = {}
    for prompt in PROMPTS:
        generation = solo.complete(prompt, GREEDY)
        generation.wait()
        answers[prompt] = generation.text
    return answers


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_n_together_equal_each_alone(batched: Engine, alone: dict[str, str], n: int) -> None:
    generations = [batched.complete(prompt, GREEDY) for prompt in PROMPTS[:n]]
    for prompt, generation in zip(PROMPTS[:n], generations, strict=True):
        assert generation.wait().finish_reason == "length"
        assert generation.text == alone[prompt]


def test_requests_joining_mid_stream(batched: Engine, alone: dict[str, str]) -> None:
    first = batched.complete(PROMPTS[0], GREEDY)
    iterator = iter(first)
    next(iterator)  # the first sequence is generating when the others join
    later = [batched.complete(prompt, GREEDY) for prompt in PROMPTS[1:]]
    for _ in iterator:
        pass
    assert first.text == alone[PROMPTS[0]]
    for prompt, generation in zip(PROMPTS[1:], later, strict=True):
        generation.wait()
        assert generation.text == alone[prompt]


def test_more_requests_than_slots_queue_and_all_finish(
    batched: Engine, alone: dict[str, str]
) -> None:
    prompts = PROMPTS * 3  # 12 requests for 4 slots
    generations = [batched.complete(prompt, GREEDY) for prompt in prompts]
    for prompt, generation in zip(prompts, generations, strict=True):
        generation.wait()
        assert generation.text == alone[prompt]
    assert batched.scheduler.queue_depth == 0 and not batched.scheduler.busy


def test_cancelling_one_leaves_the_others_intact(batched: Engine, alone: dict[str, str]) -> None:
    long_params = SamplingParams(temperature=0.0, max_tokens=200, repeat_penalty=1.0)
    victim = batched.complete(PROMPTS[0], long_params)
    others = [batched.complete(prompt, GREEDY) for prompt in PROMPTS[1:]]
    next(iter(victim))
    victim.cancel()
    assert victim.wait().finish_reason == "cancelled"
    for prompt, generation in zip(PROMPTS[1:], others, strict=True):
        generation.wait()
        assert generation.text == alone[prompt]


def test_a_returning_conversation_reuses_its_slot(batched: Engine) -> None:
    history = "Once upon a time, there was a little girl named Lily. She loved to play"
    first = batched.complete(history, GREEDY)
    first.wait()
    # Another conversation in between takes a different slot (the prefix is not its own).
    batched.complete("The sun", GREEDY).wait()
    follow_up = batched.complete(history + first.text + " Then", GREEDY)
    finish = follow_up.wait()
    assert finish.usage.cached_prompt_tokens >= len(batched.model.tokenize(history)) - 1


def test_each_slot_has_the_full_window(batched: Engine) -> None:
    assert batched.n_ctx == 256
    assert batched.scheduler.n_slots == 4
    # Four long answers at once, each up to its own window's end.
    params = SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True)
    generations = [batched.complete(prompt, params) for prompt in PROMPTS]
    for generation in generations:
        finish = generation.wait()
        assert finish.finish_reason == "length"
        assert finish.usage.prompt_tokens + finish.usage.completion_tokens == 256


def test_sessions_taking_turns_one_at_a_time_keep_their_own_slots(stories_model: Path) -> None:
    # Regression: with "longest prefix wins", a session sharing only the first words with
    # another's slot took that slot and threw its history away, turn after turn.
    with Engine(stories_model, LoadOptions(n_ctx=512, parallel=4)) as engine:
        histories = [
            f"Session {i}. Once upon a time, a child named {n}" for i, n in enumerate("ABCD")
        ]
        for turn in range(3):
            for index, history in enumerate(histories):
                generation = engine.complete(history, GREEDY)
                finish = generation.wait()
                if turn:
                    assert finish.usage.cached_prompt_tokens >= finish.usage.prompt_tokens - 12
                histories[index] = history + generation.text + f" Then, turn {turn},"
