"""The memory bank: remember messages and facts, search them, forget them, re-embed them.

Search blends two signals: cosine similarity of embeddings (when an embedding model is
configured) and FTS5 keyword relevance. Without an embedding model memory still works, by
keywords alone, and says so in its status.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hoshikage.memory.embedder import EMBED_CHUNK, Embedder
from hoshikage.memory.vectors import (
    NumpyIndex,
    Vector,
    VectorEntry,
    VectorIndex,
    from_blob,
    to_blob,
)
from hoshikage.store import MemoryFilter, MemoryRecord, MemoryStore, NewMemory, PendingMessage
from hoshikage.store.memories import keyword_terms

log = logging.getLogger(__name__)

SearchMode = Literal["semantic", "keyword"]

# How much keyword coverage weighs against cosine similarity in the blended score.
KEYWORD_WEIGHT = 0.2
# Without an embedding model: a memory must hold at least this share of the query's words
# to enter a conversation's context.
KEYWORD_MIN_COVERAGE = 0.5
# memory_min_score's default. On the memory benchmark's labelled set (all-MiniLM-L6-v2), 29
# of 30 questions score their fact at 0.29 or more, and 3 of 15 unrelated questions bring a
# personal fact over it (the highest at 0.35): a slightly unrelated note costs less than a
# missed one.
DEFAULT_MIN_SCORE = 0.25
# Candidates drawn from each signal per result asked for, before blending.
CANDIDATES_PER_RESULT = 4
# How much a message's role says about its worth as a memory, before anything is learnt.
# Results are ordered by score; importance decides between equal scores.
IMPORTANCE = {"fact": 1.0, "user": 0.6, "assistant": 0.4}


@dataclass(frozen=True)
class MemoryHit:
    record: MemoryRecord
    score: float  # what results are ordered and thresholded by
    similarity: float | None  # cosine similarity; None in keyword mode
    keyword: float  # share of the query's words it contains, 0 … 1

    def as_dict(self) -> dict[str, Any]:
        return {
            **memory_json(self.record),
            "score": round(self.score, 4),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "keyword": round(self.keyword, 4),
        }


def memory_json(record: MemoryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "text": record.text,
        "role": record.role,
        "session_id": record.session_id,
        "namespace": record.namespace,
        "created_at": record.created_at,
        "importance": record.importance,
        "embedding_model": record.embedding_model,
    }


class MemoryBank:
    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder | None,
        *,
        index: VectorIndex | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.min_score = min_score
        self.index: VectorIndex | None = None
        if embedder is not None:
            self.index = index or NumpyIndex(store, embedder.space)

    @property
    def mode(self) -> SearchMode:
        return "semantic" if self.embedder is not None else "keyword"

    @property
    def floor(self) -> float:
        """The least score of a memory worth bringing into a conversation (or showing)."""
        return self.min_score if self.mode == "semantic" else KEYWORD_MIN_COVERAGE

    @property
    def space(self) -> str | None:
        return None if self.embedder is None else self.embedder.space

    # --- remembering -------------------------------------------------------------------------
    def remember(self, memories: Sequence[NewMemory]) -> list[MemoryRecord]:
        """Embed (when a model is configured) and store memories, then index them."""
        vectors = self._embed_or_none([memory.text for memory in memories])
        if vectors is not None:
            memories = [
                dataclasses.replace(memory, embedding=to_blob(vector), embedding_model=self.space)
                for memory, vector in zip(memories, vectors, strict=True)
            ]
        stored = self.store.add(memories)
        records = [record for record in stored if record is not None]
        if vectors is not None and self.index is not None:
            by_namespace: dict[str, list[VectorEntry]] = {}
            for record, vector in zip(stored, vectors, strict=True):
                if record is not None:
                    by_namespace.setdefault(record.namespace, []).append(
                        VectorEntry(record.id, vector, record.session_id, record.created_at)
                    )
            for namespace, entries in by_namespace.items():
                self.index.add(namespace, entries)
        return records

    def remember_messages(self, messages: Sequence[PendingMessage]) -> list[MemoryRecord]:
        return self.remember(
            [
                NewMemory(
                    namespace=message.namespace,
                    text=message.text,
                    role=message.role,
                    session_id=message.session_id,
                    message_id=message.message_id,
                    created_at=message.created_at,
                    importance=IMPORTANCE[message.role],
                )
                for message in messages
            ]
        )

    def add_fact(
        self,
        namespace: str,
        text: str,
        *,
        importance: float = IMPORTANCE["fact"],
        session_id: str | None = None,
    ) -> MemoryRecord:
        (record,) = self.remember(
            [
                NewMemory(
                    namespace=namespace,
                    text=text,
                    session_id=session_id,
                    importance=importance,
                )
            ]
        )
        return record

    def catch_up(self, batch: int = 64) -> int:
        """Remember every stored message that is not remembered yet; how many were."""
        done = 0
        while pending := self.store.pending_messages(batch):
            done += len(self.remember_messages(pending))
        return done

    def _embed_or_none(self, texts: list[str]) -> list[Vector] | None:
        if self.embedder is None or not texts:
            return None
        try:
            return self.embedder.embed(texts)
        except Exception as exc:  # remembered by keywords now, embedded by `reindex` later
            log.warning(
                "could not embed %d memories (%s); they are searchable by keyword until "
                "`hoshikage memory reindex` embeds them",
                len(texts),
                exc,
            )
            return None

    # --- searching ---------------------------------------------------------------------------
    def search(
        self,
        query: str,
        where: MemoryFilter,
        *,
        limit: int = 5,
        min_score: float | None = None,
    ) -> list[MemoryHit]:
        """The memories most relevant to `query`, best first.

        Candidates come from both signals: the nearest vectors, and FTS5 keyword matches.
        Each is scored by cosine similarity blended with keyword coverage (the share of the
        query's words it contains); without an embedding model, by coverage alone."""
        if limit <= 0 or not query.strip():
            return []
        pool = limit * CANDIDATES_PER_RESULT
        terms = keyword_terms(query)
        relevance = dict(self.store.keyword_search(where, terms, limit=pool))
        similarity: dict[int, float] = {}
        query_vector = self._query_vector(query)
        if query_vector is not None and self.index is not None:
            similarity = dict(self.index.search(where, query_vector, pool))
            missing = [i for i in relevance if i not in similarity]
            similarity.update(self._similarities(missing, query_vector))
        candidates = set(relevance) | set(similarity)
        coverage = self.store.term_coverage(candidates, terms)
        records = self.store.many(candidates)
        hits = []
        for memory_id, record in records.items():
            keyword = coverage.get(memory_id, 0.0)
            if query_vector is not None:
                cosine = similarity.get(memory_id, 0.0)
                score = (1 - KEYWORD_WEIGHT) * cosine + KEYWORD_WEIGHT * keyword
                hits.append(MemoryHit(record, score, cosine, keyword))
            else:
                hits.append(MemoryHit(record, keyword, None, keyword))

        def rank(hit: MemoryHit) -> tuple[float, float, float, int]:
            score = round(hit.score, 6)  # equal to the eye: importance decides
            return (score, hit.record.importance, relevance.get(hit.record.id, 0.0), hit.record.id)

        hits.sort(key=rank, reverse=True)
        if min_score is not None:
            hits = [hit for hit in hits if hit.score >= min_score]
        return hits[:limit]

    def _query_vector(self, query: str) -> Vector | None:
        if self.embedder is None:
            return None
        try:
            return self.embedder.embed([query])[0]
        except Exception as exc:  # still found by keywords
            log.warning("could not embed the query (%s); searching by keywords only", exc)
            return None

    def _similarities(self, ids: list[int], query: Vector) -> dict[int, float]:
        """Cosine similarity of memories found by keyword but not among the nearest vectors."""
        if not ids or self.space is None:
            return {}
        stored = self.store.embeddings(ids, self.space)
        return {
            memory_id: float(np.dot(from_blob(blob), query)) for memory_id, blob in stored.items()
        }

    def message_vectors(self, message_ids: Sequence[int], texts: Sequence[str]) -> list[Vector]:
        """Vectors of stored messages: as remembered where they are, else embedded now."""
        if self.embedder is None:
            raise RuntimeError("no embedding model")
        stored = self.store.vectors_of_messages(list(message_ids), self.embedder.space)
        missing = [i for i, m in enumerate(message_ids) if m not in stored]
        fresh = dict(zip(missing, self.embedder.embed([texts[i] for i in missing]), strict=True))
        return [fresh[i] if i in fresh else from_blob(stored[m]) for i, m in enumerate(message_ids)]

    # --- forgetting ----------------------------------------------------------------------------
    def get(self, namespace: str, memory_id: int) -> MemoryRecord | None:
        record = self.store.get(memory_id)
        return record if record is not None and record.namespace == namespace else None

    def forget(self, namespace: str, ids: Sequence[int]) -> list[MemoryRecord]:
        """Forget memories of this namespace (ids of other namespaces are not touched)."""
        mine = [r.id for r in self.store.many(ids).values() if r.namespace == namespace]
        return self._forget(mine)

    def forget_where(self, where: MemoryFilter) -> list[MemoryRecord]:
        return self._forget(self.store.ids(where))

    def _forget(self, ids: list[int]) -> list[MemoryRecord]:
        forgotten = self.store.forget(ids)
        if self.index is not None and forgotten:
            self.index.remove([record.id for record in forgotten])
        return forgotten

    # --- re-embedding ----------------------------------------------------------------------------
    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Embed every memory that is not in the current model's space; how many were."""
        if self.embedder is None:
            raise RuntimeError(
                "no embedding model is configured: set embedding_model to reindex memory"
            )
        space = self.embedder.space
        stale = self.store.stale_memories(space)
        for start in range(0, len(stale), EMBED_CHUNK):
            chunk = stale[start : start + EMBED_CHUNK]
            vectors = self.embedder.embed([record.text for record in chunk])
            self.store.set_embeddings(
                [(r.id, to_blob(v), space) for r, v in zip(chunk, vectors, strict=True)]
            )
            if progress is not None:
                progress(start + len(chunk), len(stale))
        if stale and self.index is not None:
            self.index.clear()  # read again from the store on next search
        return len(stale)

    # --- status ------------------------------------------------------------------------------
    def status(self, namespace: str | None = None) -> dict[str, Any]:
        counts = self.store.counts(namespace)
        total = sum(counts.values())
        current = counts.get(self.space, 0) if self.space else 0
        status: dict[str, Any] = {
            "mode": self.mode,
            "embedding_model": self.space,
            "memories": total,
        }
        if self.mode == "keyword":
            status["note"] = (
                "no embedding_model configured: memory is searched by keywords (SQLite FTS5)"
            )
        elif total - current:
            status["needs_reindex"] = total - current
            status["note"] = (
                f"{total - current} memories are not embedded with {self.space}: they are found "
                f"by keywords only until `hoshikage memory reindex`"
            )
        return status

    def export(self, namespace: str | None = None) -> dict[str, Any]:
        namespaces = [namespace] if namespace else self.store.all_namespaces()
        memories = [
            memory_json(record)
            for name in namespaces
            for record in self.store.recent(MemoryFilter(namespace=name), limit=-1)
        ]
        return {
            "format": "hoshikage-memory",
            "version": 1,
            "exported_at": time.time(),
            "embedding_model": self.space,
            "memories": memories,
        }
