"""Fit a conversation into the context window by dropping its oldest turns."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hoshikage.engine.types import ChatMessage, ContextOverflowError


def fit_messages(
    messages: Sequence[ChatMessage],
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    budget: int,
    *,
    n_ctx: int,
    reserved: int,
) -> tuple[list[ChatMessage], int, int]:
    """The longest recent part of the conversation whose prompt fits in `budget` tokens.

    Leading system messages and the newest message are always kept; history is dropped from
    the oldest end, whole turns at a time (the kept history starts at a user message, since
    many templates insist on alternating roles). Returns (messages, dropped count, prompt
    tokens). Raises ContextOverflowError when even system + newest message do not fit.
    """
    if not messages:
        raise ValueError("no messages to fit")
    n_system = 0
    while n_system < len(messages) - 1 and messages[n_system].role == "system":
        n_system += 1
    system, rest = list(messages[:n_system]), list(messages[n_system:])
    # Candidate starting points for the kept history, from keeping all to keeping the last.
    cuts = [0] + [i for i in range(1, len(rest)) if rest[i].role == "user"]
    if cuts[-1] != len(rest) - 1:
        cuts.append(len(rest) - 1)

    def size(cut: int) -> int:
        return count_tokens(system + rest[cut:])

    everything = size(0)
    if everything <= budget:
        return list(messages), 0, everything
    smallest = size(cuts[-1])
    if smallest > budget:
        raise ContextOverflowError(
            f"the newest message needs a prompt of {smallest} tokens and {reserved} more are "
            f"reserved for the answer, but the context window holds {n_ctx} tokens; shorten "
            f"the message or the system prompt, lower max_tokens, or raise n_ctx",
            n_prompt_tokens=smallest,
            n_ctx=n_ctx,
        )
    # Dropping more never makes the prompt longer: binary-search the first cut that fits.
    low, high, fitting_size = 1, len(cuts) - 1, smallest
    while low < high:
        middle = (low + high) // 2
        middle_size = size(cuts[middle])
        if middle_size <= budget:
            high, fitting_size = middle, middle_size
        else:
            low = middle + 1
    kept = system + rest[cuts[low] :]
    return kept, len(messages) - len(kept), fitting_size
