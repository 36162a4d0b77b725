"""The context builder: what goes into the window for a turn, chosen on purpose and reported.

Within the model's window minus the answer's reserve it assembles, in this order of priority:
the system prompt and the newest user message (always); a short block of relevant memories
from other conversations; the summary of this conversation's older turns; and as many recent
turns, whole, as fit. The report says which memories were used and which turns were
summarised or dropped, so front ends can show it.

Placement keeps llama.cpp's prefix cache useful: the summary joins the system prompt (it
changes only when more turns age out) and the memory block rides in the newest user message
only, so the history before it is the same prefix turn after turn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from hoshikage.conversation.summary import ChatModel, HistoryMessage, Summarizer
from hoshikage.engine import ChatMessage, ContextOverflowError, EngineError, SamplingParams
from hoshikage.engine.window import fit_messages
from hoshikage.memory.bank import MemoryBank, MemoryHit
from hoshikage.store import MemoryFilter, SummaryRecord

log = logging.getLogger(__name__)

SUMMARY_HEADING = "Summary of the earlier part of this conversation:"
MEMORY_HEADING = "[Notes from earlier conversations]"
MEMORY_END = "[End of notes]"
# Tokens set aside for the summary's heading and template tokens, beyond its own length.
SUMMARY_OVERHEAD = 32
# When turns must age out, the recent history is cut to this share of its room, so that the
# next turns fit without writing the summary again (each rewrite costs a generation and
# the prefix cache of the whole conversation).
AGE_OUT_TARGET = 0.5
# Memories searched per memory wanted: room to skip repeats and still fill top_k.
SEARCH_WIDTH = 4


@dataclass(frozen=True)
class ContextOptions:
    memory: bool = True  # add relevant memories from other conversations
    top_k: int = 5
    memory_tokens: int = 384  # the memory block's budget (and never over a third of the room)
    summaries: bool = True  # summarise turns that no longer fit (else they are dropped)


@dataclass(frozen=True)
class UsedMemory:
    id: int
    score: float
    text: str
    session_id: str | None
    created_at: float


@dataclass(frozen=True)
class SummaryUse:
    through_message_id: int  # the summary covers the session's messages up to this one
    summarized_messages: int
    method: str  # clusters | oldest
    source_message_ids: list[int]
    updated: bool  # written for this turn (False: the cached one still covered it)


@dataclass(frozen=True)
class ContextReport:
    memories: list[UsedMemory] = field(default_factory=list)
    summary: SummaryUse | None = None
    history_messages: int = 0  # earlier messages kept word for word
    dropped_messages: int = 0  # earlier messages left out with no summary of them
    memory_mode: str | None = None  # semantic | keyword | None (memory not used)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and the terminal."""
        parts = [f"{self.history_messages} history messages"]
        if self.memories:
            ids = ", ".join(str(memory.id) for memory in self.memories)
            parts.append(f"memories {ids}")
        if self.summary is not None:
            parts.append(
                f"summary of {self.summary.summarized_messages} messages "
                f"(through #{self.summary.through_message_id}, {self.summary.method})"
            )
        if self.dropped_messages:
            parts.append(f"{self.dropped_messages} dropped")
        return "; ".join(parts)


@dataclass(frozen=True)
class BuiltContext:
    messages: list[ChatMessage]
    report: ContextReport


class ContextBuilder:
    def __init__(
        self,
        model: ChatModel,
        *,
        bank: MemoryBank | None,
        summarizer: Summarizer | None,
        options: ContextOptions,
    ) -> None:
        self._model = model
        self._bank = bank
        self._summarizer = summarizer if options.summaries else None
        self.options = options

    def build(
        self,
        *,
        system_prompt: str | None,
        history: Sequence[HistoryMessage],
        user_text: str,
        params: SamplingParams,
        namespace: str,
        session_id: str | None,
        use_memory: bool = True,
        drop_oldest: bool = True,
    ) -> BuiltContext:
        """The messages for this turn and what they hold. With drop_oldest False a
        conversation that does not fit whole is a ContextOverflowError instead."""
        reserved = self._model.answer_reserve(params)
        budget = self._model.n_ctx - reserved
        system = [ChatMessage("system", system_prompt)] if system_prompt else []
        newest = ChatMessage("user", user_text)
        essential = self._model.count_chat_tokens([*system, newest])
        if essential > budget:
            raise ContextOverflowError(
                f"the system prompt and the newest message need {essential} tokens and "
                f"{reserved} more are reserved for the answer, but the context window holds "
                f"{self._model.n_ctx} tokens; shorten the message or the system prompt, lower "
                f"max_tokens, or raise n_ctx",
                n_prompt_tokens=essential,
                n_ctx=self._model.n_ctx,
            )
        used: list[UsedMemory] = []
        mode = None
        if use_memory and self.options.memory and self._bank is not None:
            mode = self._bank.mode
            room = min(self.options.memory_tokens, (budget - essential) // 3)
            used, newest = self._with_memories(newest, history, namespace, session_id, room=room)
        chat_history = [message.chat for message in history]
        everything = [*system, *chat_history, newest]
        n_prompt = self._model.count_chat_tokens(everything)
        if n_prompt <= budget:
            report = ContextReport(used, None, len(history), 0, mode)
            return BuiltContext(everything, report)
        if not drop_oldest:
            raise ContextOverflowError(
                f"the conversation needs {n_prompt} prompt tokens and {reserved} more are "
                f"reserved for the answer, but the context window holds {self._model.n_ctx}",
                n_prompt_tokens=n_prompt,
                n_ctx=self._model.n_ctx,
            )
        if self._summarizer is not None and session_id is not None and _all_stored(history):
            return self._summarised(
                system_prompt, history, newest, budget, reserved, session_id, used, mode
            )
        kept, dropped, _ = fit_messages(
            everything,
            self._model.count_chat_tokens,
            budget,
            n_ctx=self._model.n_ctx,
            reserved=reserved,
        )
        report = ContextReport(used, None, len(history) - dropped, dropped, mode)
        return BuiltContext(kept, report)

    # --- memories ------------------------------------------------------------------------
    def _with_memories(
        self,
        newest: ChatMessage,
        history: Sequence[HistoryMessage],
        namespace: str,
        session_id: str | None,
        *,
        room: int,
    ) -> tuple[list[UsedMemory], ChatMessage]:
        assert self._bank is not None
        # Wider than top_k: repeats of what the window holds are skipped before the cut.
        hits = self._bank.search(
            newest.content,
            MemoryFilter(namespace=namespace, exclude_session=session_id),
            limit=self.options.top_k * SEARCH_WIDTH,
            min_score=self._bank.floor,
        )
        # Nothing the window already holds, nor the question itself asked again.
        seen = {_normal(message.content) for message in history} | {_normal(newest.content)}
        lines: list[str] = []
        used: list[UsedMemory] = []
        spent = self._model.count_text_tokens(f"{MEMORY_HEADING}\n{MEMORY_END}\n\n")
        for hit in hits:
            key = _normal(hit.record.text)
            if key in seen or len(used) >= self.options.top_k:
                continue
            line = _memory_line(hit)
            cost = self._model.count_text_tokens(line) + 1
            if spent + cost > room:
                continue
            seen.add(key)
            spent += cost
            lines.append(line)
            used.append(
                UsedMemory(
                    hit.record.id,
                    round(hit.score, 4),
                    hit.record.text,
                    hit.record.session_id,
                    hit.record.created_at,
                )
            )
        if not lines:
            return [], newest
        block = "\n".join([MEMORY_HEADING, *lines, MEMORY_END])
        return used, ChatMessage("user", f"{block}\n\n{newest.content}")

    # --- summaries -----------------------------------------------------------------------
    def _summarised(
        self,
        system_prompt: str | None,
        history: Sequence[HistoryMessage],
        newest: ChatMessage,
        budget: int,
        reserved: int,
        session_id: str,
        used: list[UsedMemory],
        mode: str | None,
    ) -> BuiltContext:
        summarizer = self._summarizer
        assert summarizer is not None
        previous = summarizer.cached(session_id)
        if previous is not None and previous.through_message_id < _first_id(history):
            previous = None  # from before an import or a reset: not about this history
        covered = previous.through_message_id if previous is not None else 0
        # What a summary covers never comes back word for word: the boundary only moves on.
        candidates = [m for m in history if (m.id or 0) > covered]
        system = [ChatMessage("system", system_prompt)] if system_prompt else []
        summary_tokens = summarizer.summary_tokens(self._model.n_ctx)
        room = budget - summary_tokens - SUMMARY_OVERHEAD
        summary: SummaryRecord | None = previous
        updated = False
        cut = 0
        if self._aged_out(system, candidates, newest, room):
            cut = self._aged_out(system, candidates, newest, int(room * AGE_OUT_TARGET))
            aged = [m for m in history if (m.id or 0) <= covered] + candidates[:cut]
            try:
                summary = summarizer.update(session_id, previous, aged, max_tokens=summary_tokens)
                updated = True
            except (EngineError, RuntimeError) as exc:  # the turn goes on, without it
                log.warning("could not summarise older turns (%s); dropping them instead", exc)
        recent = [m.chat for m in candidates[cut:]]
        head = system
        if summary is not None and summary.text.strip():
            parts = [system_prompt] if system_prompt else []
            parts.append(f"{SUMMARY_HEADING}\n{summary.text.strip()}")
            head = [ChatMessage("system", "\n\n".join(parts))]
        messages = [*head, *recent, newest]
        kept, dropped, _ = fit_messages(
            messages,
            self._model.count_chat_tokens,
            budget,
            n_ctx=self._model.n_ctx,
            reserved=reserved,
        )
        through = summary.through_message_id if summary is not None else 0
        summarized = sum(1 for m in history if (m.id or 0) <= through)
        # Aged out but in no summary (writing it failed): dropped, and said so.
        dropped += len(history) - len(recent) - summarized
        use = None
        if summary is not None:
            use = SummaryUse(
                through_message_id=through,
                summarized_messages=summarized,
                method=summary.method,
                source_message_ids=summary.source_ids,
                updated=updated,
            )
        kept_history = len(kept) - len(head) - 1
        report = ContextReport(used, use, kept_history, dropped, mode)
        return BuiltContext(kept, report)

    def _aged_out(
        self,
        system: list[ChatMessage],
        candidates: Sequence[HistoryMessage],
        newest: ChatMessage,
        room: int,
    ) -> int:
        """How many of the oldest candidates must go (whole turns) for the rest to fit."""
        messages = [*system, *(m.chat for m in candidates), newest]
        try:
            _, dropped, _ = fit_messages(
                messages, self._model.count_chat_tokens, room, n_ctx=self._model.n_ctx, reserved=0
            )
        except ContextOverflowError:  # not even with none of them: all go
            return len(candidates)
        return dropped


def _memory_line(hit: MemoryHit) -> str:
    day = datetime.fromtimestamp(hit.record.created_at).strftime("%Y-%m-%d")
    who = {"user": "user", "assistant": "assistant", "fact": "note"}[hit.record.role]
    return f"- [{day}] {who}: {' '.join(hit.record.text.split())}"


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def _all_stored(history: Sequence[HistoryMessage]) -> bool:
    return bool(history) and all(message.id is not None for message in history)


def _first_id(history: Sequence[HistoryMessage]) -> int:
    return min((m.id for m in history if m.id is not None), default=0)
