"""Clustering summaries: what a conversation said before the turns still in the window.

When older turns no longer fit, they are embedded, clustered with K-means (k =
clamp(turns / cluster_divisor, min_clusters, max_clusters)), and the turns nearest each
centroid — the conversation's main threads, not just its first minutes — are given, in time
order, to the loaded model to summarise. The summary is cached per session and updated as more
turns age out: the model merges the summary so far with excerpts of the newly aged turns.
Without an embedding model the oldest turns are summarised, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hoshikage.engine import ChatMessage, Generation, SamplingParams
from hoshikage.memory.bank import MemoryBank
from hoshikage.store import MemoryStore, SummaryRecord
from hoshikage.store.memories import SummaryMethod

log = logging.getLogger(__name__)

# Characters of one message an excerpt keeps: one long answer must not crowd out the rest.
EXCERPT_CHARS = 1200
# Tokens kept free in the summarising prompt: excerpts are counted one by one, and joined
# they may tokenise a little differently.
PROMPT_MARGIN = 16


class ChatModel(Protocol):
    """What building a context and summarising need from a loaded model (an Engine)."""

    @property
    def n_ctx(self) -> int: ...

    def count_chat_tokens(self, messages: Sequence[ChatMessage]) -> int: ...

    def count_text_tokens(self, text: str) -> int: ...

    def answer_reserve(self, params: SamplingParams) -> int: ...

    def chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation: ...


@dataclass(frozen=True)
class HistoryMessage:
    """A message of the conversation so far; `id` when it is stored in a session."""

    role: str
    content: str
    id: int | None = None
    remember: bool = True
    chat_message: ChatMessage | None = None  # the whole message, with its tool calls

    @property
    def chat(self) -> ChatMessage:
        if self.chat_message is not None:
            return self.chat_message
        return ChatMessage(self.role, self.content)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SummaryOptions:
    max_tokens: int = 256
    cluster_divisor: int = 100
    min_clusters: int = 1
    max_clusters: int = 20


@dataclass(frozen=True)
class AgedTurn:
    """A user message and the answers that followed it, out of the window now."""

    messages: tuple[HistoryMessage, ...]

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.messages if m.id is not None]

    def excerpt(self, limit: int = EXCERPT_CHARS) -> str:
        lines = [
            f"{message.role.capitalize()}: {_shorten(message.content, limit)}"
            for message in self.messages
        ]
        return "\n".join(lines)


def _shorten(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def group_turns(messages: Sequence[HistoryMessage]) -> list[AgedTurn]:
    """Messages grouped into turns (each starts at a user message); opted-out ones left out."""
    turns: list[list[HistoryMessage]] = []
    for message in messages:
        if not message.remember or message.role not in ("user", "assistant"):
            continue
        if message.role == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return [AgedTurn(tuple(turn)) for turn in turns]


def cluster_count(turns: int, options: SummaryOptions) -> int:
    k = turns // max(options.cluster_divisor, 1)
    return max(1, min(max(k, options.min_clusters), options.max_clusters, turns))


def kmeans(
    vectors: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Labels and centroids (scikit-learn's K-means, seeded: the same turns, the same clusters)."""
    from sklearn.cluster import KMeans  # imported here: only long conversations need it

    model = KMeans(n_clusters=k, n_init=4, random_state=0).fit(vectors)
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32)


def representatives(
    vectors: npt.NDArray[np.float32], k: int, fits: Callable[[list[int]], bool]
) -> list[int]:
    """Indices of the turns nearest each centroid, taken round-robin over the clusters (the
    largest first) while `fits` accepts them, returned in time order."""
    labels, centroids = kmeans(vectors, k)
    queues = []
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        distance = np.linalg.norm(vectors[members] - centroids[cluster], axis=1)
        queues.append([int(i) for i in members[np.argsort(distance, kind="stable")]])
    queues.sort(key=len, reverse=True)
    chosen: list[int] = []
    while any(queues):
        for queue in queues:
            if queue and fits([*chosen, queue[0]]):
                chosen.append(queue.pop(0))
            elif queue:
                queue.clear()  # its next-nearest turn does not fit: this cluster is done
    return sorted(chosen)


class Summarizer:
    """Writes and caches a session's summary of the turns that aged out of the window."""

    def __init__(
        self,
        model: ChatModel,
        store: MemoryStore,
        bank: MemoryBank | None,
        options: SummaryOptions,
    ) -> None:
        self._model = model
        self._store = store
        self._bank = bank if bank is not None and bank.embedder is not None else None
        self.options = options

    def cached(self, session_id: str) -> SummaryRecord | None:
        return self._store.summary(session_id)

    def summary_tokens(self, n_ctx: int) -> int:
        """The longest summary for a window: the setting, and never over a quarter of it."""
        return max(min(self.options.max_tokens, n_ctx // 4), 16)

    def update(
        self,
        session_id: str,
        previous: SummaryRecord | None,
        aged: Sequence[HistoryMessage],
        *,
        max_tokens: int,
    ) -> SummaryRecord:
        """A summary of everything up to the last of `aged` (stored messages, in order),
        merging `previous` with excerpts of the turns it did not cover yet."""
        through = max(m.id for m in aged if m.id is not None)
        covered = previous.through_message_id if previous else 0
        turns = group_turns([m for m in aged if m.id is not None and m.id > covered])
        prior = previous.text if previous else ""
        budget = self._excerpt_budget(prior, max_tokens)
        fitted = [self._within(turn, budget) for turn in turns]
        turns = [turn for turn, _ in fitted]
        sizes = [size for _, size in fitted]

        def fits(indices: list[int]) -> bool:
            return sum(sizes[i] for i in indices) <= budget

        method: SummaryMethod
        if self._bank is not None and len(turns) > 1:
            chosen = representatives(
                self._turn_vectors(turns), cluster_count(len(turns), self.options), fits
            )
            method = "clusters"
        else:
            chosen, total = [], 0
            for index, size in enumerate(sizes):
                total += size
                if total > budget:
                    break
                chosen.append(index)
            method = "oldest"
        picked = [turns[i] for i in chosen]
        text = self._write(prior, picked, max_tokens) if picked else prior
        source_ids = sorted(
            {*(previous.source_ids if previous else []), *(i for t in picked for i in t.ids)}
        )
        summary = SummaryRecord(
            session_id=session_id,
            through_message_id=through,
            text=text,
            source_ids=source_ids,
            method=method,
            created_at=time.time(),
        )
        self._store.save_summary(summary)
        log.info(
            "summarised %d aged turns of session %s (%s, %d excerpts) in a %d-character summary",
            len(turns),
            session_id[:8],
            method,
            len(picked),
            len(text),
        )
        return summary

    def _excerpt_budget(self, prior: str, max_tokens: int) -> int:
        """Tokens the excerpts may take: the window less the answer and the prompt around."""
        around = self._model.count_chat_tokens(self._prompt(prior, "", max_tokens))
        return max(self._model.n_ctx - max_tokens - around - PROMPT_MARGIN, 32)

    def _within(self, turn: AgedTurn, budget: int) -> tuple[AgedTurn, int]:
        """The turn, its messages shortened until its excerpt alone fits the budget, and the
        tokens its excerpt takes."""
        limit = EXCERPT_CHARS
        size = self._excerpt_tokens(turn, limit)
        while limit > 40 and size > budget:
            limit = limit * 2 // 3
            size = self._excerpt_tokens(turn, limit)
        if limit == EXCERPT_CHARS:
            return turn, size
        shortened = tuple(
            HistoryMessage(m.role, _shorten(m.content, limit), m.id, m.remember)
            for m in turn.messages
        )
        return AgedTurn(shortened), size

    def _excerpt_tokens(self, turn: AgedTurn, limit: int) -> int:
        return self._model.count_text_tokens(turn.excerpt(limit)) + 2  # and the blank line

    def _turn_vectors(self, turns: Sequence[AgedTurn]) -> npt.NDArray[np.float32]:
        assert self._bank is not None
        messages = [m for turn in turns for m in turn.messages]
        vectors = self._bank.message_vectors(
            [m.id or 0 for m in messages], [m.content for m in messages]
        )
        in_order = iter(vectors)
        rows = []
        for turn in turns:
            mean = np.mean([next(in_order) for _ in turn.messages], axis=0)
            rows.append(mean / (np.linalg.norm(mean) or 1.0))
        return np.asarray(rows, dtype=np.float32)

    def _prompt(self, prior: str, excerpts: str, max_tokens: int) -> list[ChatMessage]:
        words = max(max_tokens * 3 // 5, 10)
        earlier = f"The summary so far:\n{prior}\n\n" if prior else ""
        merge = " Merge it with the summary so far." if prior else ""
        request = (
            f"Summarise the conversation below in at most {words} words.{merge} Keep names, "
            f"facts, numbers, decisions and open questions; leave out greetings. Write plain "
            f"sentences with no preamble.\n\n{earlier}Excerpts, in the order they were said:"
            f"\n\n{excerpts}"
        )
        return [
            ChatMessage("system", "You write short, faithful summaries of conversations."),
            ChatMessage("user", request),
        ]

    def _write(self, prior: str, turns: Sequence[AgedTurn], max_tokens: int) -> str:
        excerpts = "\n\n".join(turn.excerpt() for turn in turns)
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        generation = self._model.chat(self._prompt(prior, excerpts, max_tokens), params)
        generation.wait()
        return generation.text.strip() or prior
