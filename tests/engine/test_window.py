"""Fitting a conversation into the context window by dropping its oldest whole turns."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoshikage.engine.types import ChatMessage, ContextOverflowError, Role
from hoshikage.engine.window import fit_messages

PROPERTY = settings(max_examples=300, deadline=None, database=None)


def count(messages: Sequence[ChatMessage]) -> int:
    """A stand-in tokenizer: 4 tokens of template per message, 1 token per 4 characters."""
    return sum(len(message.content) // 4 + 4 for message in messages)


def msg(role: Role, size: int) -> ChatMessage:
    """A message of exactly `size` tokens under `count` (size >= 4)."""
    return ChatMessage(role, "x" * (4 * (size - 4)))


def fit(messages: Sequence[ChatMessage], budget: int) -> tuple[list[ChatMessage], int, int]:
    return fit_messages(messages, count, budget, n_ctx=budget + 100, reserved=100)


SYSTEM = ChatMessage("system", "s" * 40)  # 14 tokens
CONVERSATION = [
    SYSTEM,
    ChatMessage("user", "u" * 40),  # 14
    ChatMessage("assistant", "a" * 80),  # 24
    ChatMessage("user", "v" * 40),  # 14
    ChatMessage("assistant", "b" * 80),  # 24
    ChatMessage("user", "w" * 40),  # 14
]
TOTAL = 14 + 14 + 24 + 14 + 24 + 14  # 104


def test_count_helper() -> None:
    assert count(CONVERSATION) == TOTAL
    assert count([msg("user", 10)]) == 10


def test_everything_fits_unchanged() -> None:
    kept, dropped, tokens = fit(CONVERSATION, TOTAL)
    assert kept == CONVERSATION
    assert dropped == 0
    assert tokens == TOTAL


def test_drops_the_oldest_whole_turn() -> None:
    kept, dropped, tokens = fit(CONVERSATION, TOTAL - 1)
    assert kept == [SYSTEM, *CONVERSATION[3:]]
    assert dropped == 2
    assert tokens == TOTAL - 14 - 24


def test_drops_more_turns_as_the_budget_shrinks() -> None:
    kept, dropped, tokens = fit(CONVERSATION, 14 + 14 + 24 + 14 - 1)
    assert kept == [SYSTEM, CONVERSATION[-1]]
    assert dropped == 4
    assert tokens == 28


def test_keeps_every_leading_system_message() -> None:
    second_system = ChatMessage("system", "t" * 20)  # 9
    messages = [SYSTEM, second_system, *CONVERSATION[1:]]
    kept, dropped, _ = fit(messages, 14 + 9 + 14)
    assert kept == [SYSTEM, second_system, CONVERSATION[-1]]
    assert dropped == 4


def test_kept_history_starts_with_a_user_message() -> None:
    # Budget for system + the last assistant + the newest user, but not the user before them:
    # the assistant answer alone must not be kept without its question.
    kept, _, _ = fit(CONVERSATION, 14 + 24 + 14)
    assert kept == [SYSTEM, CONVERSATION[-1]]
    assert kept[1].role == "user"


def test_without_a_system_message() -> None:
    messages = CONVERSATION[1:]
    kept, dropped, tokens = fit(messages, 14 + 24 + 14)
    assert kept == messages[2:]
    assert kept[0].role == "user"
    assert dropped == 2
    assert tokens == 52


def test_impossible_fit_raises_context_overflow() -> None:
    with pytest.raises(ContextOverflowError) as caught:
        fit_messages(CONVERSATION, count, 27, n_ctx=512, reserved=485)
    error = caught.value
    assert error.n_prompt_tokens == 28  # system + newest message
    assert error.n_ctx == 512
    message = str(error)
    assert "28 tokens" in message
    assert "485" in message
    assert "512" in message


def test_single_message_fits() -> None:
    only = [ChatMessage("user", "hello")]
    assert fit(only, 100) == (only, 0, 5)


def test_single_message_too_long() -> None:
    with pytest.raises(ContextOverflowError) as caught:
        fit([msg("user", 50)], 49)
    assert caught.value.n_prompt_tokens == 50


def test_single_system_message_counts_as_the_newest() -> None:
    only = [SYSTEM]
    assert fit(only, 14) == (only, 0, 14)


def test_no_messages_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no messages"):
        fit([], 100)


# --- property ---------------------------------------------------------------------------------


LATER_ROLES: list[Role] = ["user", "assistant", "tool"]


@st.composite
def conversations(draw: st.DrawFn) -> list[ChatMessage]:
    n_system = draw(st.integers(0, 2))
    messages = [ChatMessage("system", "s" * draw(st.integers(0, 60))) for _ in range(n_system)]
    roles = draw(st.lists(st.sampled_from(LATER_ROLES), min_size=0, max_size=12))
    newest: Role = "user"
    for index, role in enumerate([*roles, newest]):
        size = draw(st.integers(0, 120))
        messages.append(ChatMessage(role, f"{index}:" + "c" * size))
    return messages


def reference_fit(messages: list[ChatMessage], budget: int) -> list[ChatMessage] | None:
    """Linear scan over the allowed cut points: the longest suffix that fits, or None."""
    n_system = 0
    while n_system < len(messages) - 1 and messages[n_system].role == "system":
        n_system += 1
    system, rest = messages[:n_system], messages[n_system:]
    cuts = [0, *(i for i in range(1, len(rest)) if rest[i].role == "user"), len(rest) - 1]
    for cut in cuts:
        if count(system + rest[cut:]) <= budget:
            return system + rest[cut:]
    return None


@PROPERTY
@given(messages=conversations(), budget=st.integers(0, 400))
def test_property_fit_never_exceeds_the_budget(messages: list[ChatMessage], budget: int) -> None:
    expected = reference_fit(messages, budget)
    n_system = 0
    while n_system < len(messages) - 1 and messages[n_system].role == "system":
        n_system += 1
    minimum = count(messages[:n_system] + messages[-1:])
    try:
        kept, dropped, tokens = fit_messages(messages, count, budget, n_ctx=4096, reserved=7)
    except ContextOverflowError as error:
        assert expected is None
        assert minimum > budget
        assert error.n_prompt_tokens == minimum
        assert error.n_ctx == 4096
        return
    assert expected is not None
    assert kept == expected
    assert tokens == count(kept) <= budget
    assert dropped == len(messages) - len(kept)
    assert kept[:n_system] == messages[:n_system]  # leading system messages always kept
    assert kept[-1] == messages[-1]  # the newest message always kept
    assert kept[n_system:] == messages[len(messages) - len(kept) + n_system :]  # a suffix
    if dropped:
        history = kept[n_system:]
        assert history[0].role == "user" or len(history) == 1
