"""Several choices of one prompt (OpenAI's `n`): the prompt is read once, its KV copied."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import llama_cpp
import pytest

from hoshikage.engine import Engine, EngineError, LoadOptions, SamplingParams, context
from hoshikage.engine.types import FinishEvent

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, repeat_penalty=1.0)
SAMPLED = SamplingParams(temperature=0.9, max_tokens=24, seed=7)
# Runs until cancelled, in practice: to the end of the 1024-token window.
ENDLESS = SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(stories_model: Path) -> Iterator[Engine]:
    with Engine(stories_model, LoadOptions(n_ctx=1024, parallel=4, n_threads=1)) as engine:
        yield engine


def alone(engine: Engine, prompt: str, params: SamplingParams = GREEDY) -> str:
    generation = engine.complete(prompt, params)
    generation.wait()
    return generation.text


def fill_slots(engine: Engine) -> None:
    """Give every slot other KV, so a choice decoding on a stale cache would show."""
    others = ["The sun", "A big red ball", "Tom had a toy car", "The cat sat"]
    for generation in [engine.complete(prompt, GREEDY) for prompt in others]:
        generation.wait()


def test_greedy_choices_equal_a_single_generation(engine: Engine) -> None:
    prompt = "Once upon a time, there was a little boy named Tim"
    expected = alone(engine, prompt)
    fill_slots(engine)
    prepared = engine.prepare_completion(prompt, GREEDY)
    choices = engine.generate_choices(prepared, GREEDY, 4)
    finishes = [choice.wait() for choice in choices]
    assert [choice.text for choice in choices] == [expected] * 4
    n_prompt = len(prepared.tokens)
    for finish in finishes:
        assert finish.finish_reason == "length"
        assert finish.usage.prompt_tokens == n_prompt
        assert finish.usage.completion_tokens == 24
    # The copies evaluated nothing: they reuse the whole prompt, its last logits included.
    for finish in finishes[1:]:
        assert finish.usage.cached_prompt_tokens == n_prompt
        assert finish.timings.prompt_tokens_evaluated == 0
    # Every slot now holds the prompt and its answer (the last token is never evaluated).
    assert [cached for cached, _ in engine.scheduler.slot_usage()] == [n_prompt + 23] * 4


@pytest.mark.parametrize("share", [0.5, 0.0], ids=["state-copy", "stream-copy"])
def test_both_ways_of_copying_the_kv_give_the_same_choices(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, share: float
) -> None:
    # A short prompt's KV goes through host memory as its state; with no share it is copied
    # by llama.cpp between streams, a whole buffer at the next decode.
    monkeypatch.setattr(context, "HOST_COPY_SHARE", share)
    stream_copies: list[int] = []
    stream_copy = llama_cpp.llama_memory_seq_cp

    def counted(memory: object, source: int, target: int, p0: int, p1: int) -> None:
        stream_copies.append(target)
        stream_copy(memory, source, target, p0, p1)

    monkeypatch.setattr(llama_cpp, "llama_memory_seq_cp", counted)
    prompt = f"Ben found a shiny stone by the river ({share})"
    expected = alone(engine, prompt)
    fill_slots(engine)
    choices = engine.generate_choices(engine.prepare_completion(prompt, GREEDY), GREEDY, 4)
    for choice in choices:
        choice.wait()
    assert [choice.text for choice in choices] == [expected] * 4
    assert len(stream_copies) == (3 if share == 0.0 else 0)


def test_penalties_apply_once_to_each_choice(engine: Engine) -> None:
    # Samplers penalise the shared logits in place: each choice must start from the original.
    params = replace(GREEDY, presence_penalty=1.5)
    prompt = "Lily went to the park. Lily went to the"
    expected = alone(engine, prompt, params)
    choices = engine.generate_choices(engine.prepare_completion(prompt, params), params, 4)
    for choice in choices:
        choice.wait()
    assert [choice.text for choice in choices] == [expected] * 4


def test_the_prompt_is_evaluated_once(engine: Engine) -> None:
    prompt = "Lily and Ben went to the beach with their dog. They built a sandcastle and"
    prepared = engine.prepare_completion(prompt, GREEDY)
    finishes = [choice.wait() for choice in engine.generate_choices(prepared, GREEDY, 3)]
    evaluated = [finish.timings.prompt_tokens_evaluated for finish in finishes]
    assert evaluated == [len(prepared.tokens) - finishes[0].usage.cached_prompt_tokens, 0, 0]
    assert evaluated[0] > 1  # a new prompt: read here, not found in a slot
    # Asked again, the prompt is found in a slot: only its last token is evaluated again.
    again = [choice.wait() for choice in engine.generate_choices(prepared, GREEDY, 3)]
    assert [finish.timings.prompt_tokens_evaluated for finish in again] == [1, 0, 0]


def test_seeded_choices_differ_and_repeat(engine: Engine) -> None:
    prepared = engine.prepare_completion("Lily went", SAMPLED)
    runs = []
    for _ in range(2):
        choices = engine.generate_choices(prepared, SAMPLED, 3)
        for choice in choices:
            choice.wait()
        runs.append([choice.text for choice in choices])
    assert len(set(runs[0])) == 3
    assert runs[1] == runs[0]
    # Choice i samples as a request seeded seed + i would, decoded alongside the others.
    separate = [engine.generate(prepared, replace(SAMPLED, seed=7 + i)) for i in range(3)]
    for generation in separate:
        generation.wait()
    assert [generation.text for generation in separate] == runs[0]


def test_n_beyond_the_slots_is_an_error(engine: Engine) -> None:
    prepared = engine.prepare_completion("Once", GREEDY)
    with pytest.raises(EngineError, match=r"n=5 needs 5 slots; this model has 4 \(the parallel"):
        engine.generate_choices(prepared, GREEDY, 5)
    with pytest.raises(EngineError, match="at least 1"):
        engine.generate_choices(prepared, GREEDY, 0)
    [one] = engine.generate_choices(prepared, GREEDY, 1)
    one.wait()
    assert one.text == alone(engine, "Once")


def test_a_group_waits_until_it_has_its_slots(engine: Engine) -> None:
    prompt = "The little bird sang a song"
    expected = alone(engine, prompt)
    scheduler = engine.scheduler
    blockers = [engine.complete(f"Blocker {i} went to the park", ENDLESS) for i in range(3)]
    for blocker in blockers:
        next(iter(blocker))  # running
    seen: list[int] = []  # the queue's depth when each blocker ended

    def record(_: FinishEvent) -> None:
        seen.append(scheduler.queue_depth)  # on the engine thread, before its next admission

    for blocker in blockers:
        blocker.on_finish(record)
    with scheduler._wakeup:  # no admission, and no slot freed, while this is held
        choices = engine.generate_choices(engine.prepare_completion(prompt, GREEDY), GREEDY, 2)
        assert [busy for _, busy in scheduler.slot_usage()].count(True) == 3
        blockers[0].cancel()
    for choice in choices:
        finish = choice.wait()
        assert choice.text == expected
        assert finish.timings.queued_s > 0
    assert seen[0] == 1  # one slot was free, the group needed two: it waited
    for blocker in blockers:
        blocker.cancel()
        blocker.wait()
    assert not scheduler.busy and scheduler.queue_depth == 0


def test_cancelling_one_choice_leaves_the_others_running(engine: Engine) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=200, repeat_penalty=1.0)
    prompt = "One day, a girl named Sue"
    expected = alone(engine, prompt, params)
    choices = engine.generate_choices(engine.prepare_completion(prompt, params), params, 3)
    next(iter(choices[1]))
    choices[1].cancel()
    assert choices[1].wait().finish_reason == "cancelled"
    for choice in (choices[0], choices[2]):
        assert choice.wait().finish_reason == "length"
        assert choice.text == expected


@pytest.mark.parametrize("victim", [0, 2], ids=["reading-the-prompt", "waiting-for-the-copy"])
def test_a_choice_cancelled_before_it_starts(engine: Engine, victim: int) -> None:
    # Choice 0 reads the prompt; the others wait for its KV. Cancelled before the first step,
    # choice 0 hands the reading to a waiting choice, so the prompt is still read once.
    prompt = f"Frog number {victim} jumped over the big log and swam"
    prepared = engine.prepare_completion(prompt, GREEDY)
    with engine.scheduler._wakeup:  # the group is not admitted before the cancel
        choices = engine.generate_choices(prepared, GREEDY, 3)
        choices[victim].cancel()
    finishes = [choice.wait() for choice in choices]
    assert finishes[victim].finish_reason == "cancelled"
    assert finishes[victim].usage.completion_tokens == 0
    survivors = [finishes[index] for index in range(3) if index != victim]
    assert [choices[index].text for index in range(3) if index != victim] == [
        alone(engine, prompt)
    ] * 2
    reader, copy = sorted(survivors, key=lambda finish: -finish.timings.prompt_tokens_evaluated)
    assert copy.timings.prompt_tokens_evaluated == 0
    n_read = len(prepared.tokens) - reader.usage.cached_prompt_tokens
    assert reader.timings.prompt_tokens_evaluated == n_read > 1  # a new prompt, read once
