"""Vector search over memories: cosine similarity in NumPy, one matrix per namespace.

The SQLite store is the source of truth; an index is a cache of its vectors for one vector
space (embedding model). A namespace's matrix is read from the store on its first search and
then kept up to date incrementally as memories are added and forgotten.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hoshikage.store import MemoryFilter, MemoryStore

Vector = npt.NDArray[np.float32]


def to_blob(vector: Vector) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> Vector:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


@dataclass(frozen=True)
class VectorEntry:
    id: int
    vector: Vector
    session_id: str | None
    created_at: float


class VectorIndex(Protocol):
    """Where a namespace's vectors are searched (NumPy here, or Chroma)."""

    def add(self, namespace: str, entries: Sequence[VectorEntry]) -> None: ...

    def remove(self, ids: Collection[int]) -> None: ...

    def search(self, where: MemoryFilter, query: Vector, limit: int) -> list[tuple[int, float]]:
        """(memory id, cosine similarity), most similar first."""
        ...

    def clear(self) -> None:
        """Forget every cached vector (after the store's vectors were rewritten)."""
        ...


@dataclass
class _Space:
    """One namespace's vectors: rows of `matrix` line up with the other arrays."""

    ids: npt.NDArray[np.int64]
    matrix: npt.NDArray[np.float32]
    sessions: list[str | None]
    times: npt.NDArray[np.float64]
    pending: list[VectorEntry] = field(default_factory=list)

    @property
    def fingerprint(self) -> tuple[int, int]:
        return len(self.ids), int(self.ids.max()) if len(self.ids) else 0

    def consolidate(self) -> None:
        if not self.pending:
            return
        known = set(self.ids.tolist())  # a reload may already hold what is pending
        new = [entry for entry in self.pending if entry.id not in known]
        self.pending = []
        if not new:
            return
        vectors = np.stack([entry.vector for entry in new]).astype(np.float32)
        self.matrix = vectors if self.matrix.size == 0 else np.vstack([self.matrix, vectors])
        self.ids = np.concatenate([self.ids, np.array([e.id for e in new], dtype=np.int64)])
        self.sessions = self.sessions + [entry.session_id for entry in new]
        self.times = np.concatenate(
            [self.times, np.array([e.created_at for e in new], dtype=np.float64)]
        )

    def drop(self, ids: Collection[int]) -> None:
        self.consolidate()
        keep = ~np.isin(self.ids, np.fromiter(ids, dtype=np.int64))
        self.ids, self.matrix, self.times = self.ids[keep], self.matrix[keep], self.times[keep]
        self.sessions = [s for s, kept in zip(self.sessions, keep, strict=True) if kept]


class NumpyIndex:
    """Exact cosine search (vectors are L2-normalised, so a dot product) over the store's
    vectors of one embedding model. Thread-safe: the indexer adds while requests search.

    Before each search the namespace's count and highest id in the store are compared with
    the cache's: memories another process added (a terminal chat on the same store) or that a
    cascade deleted (a deleted session) make it read the namespace again."""

    def __init__(self, store: MemoryStore, space: str) -> None:
        self._store = store
        self._space = space
        self._spaces: dict[str, _Space] = {}
        self._lock = threading.Lock()

    def _loaded(self, namespace: str) -> _Space:
        space = self._spaces.get(namespace)
        if space is not None:
            space.consolidate()
            if space.fingerprint != self._store.fingerprint(namespace, self._space):
                space = None
        if space is None:
            stored = self._store.vectors(namespace, self._space)
            matrix = (
                np.stack([np.frombuffer(b, dtype="<f4") for b in stored.blobs]).astype(np.float32)
                if stored.blobs
                else np.zeros((0, 0), dtype=np.float32)
            )
            space = _Space(
                ids=np.array(stored.ids, dtype=np.int64),
                matrix=matrix,
                sessions=list(stored.session_ids),
                times=np.array(stored.created_at, dtype=np.float64),
            )
            self._spaces[namespace] = space
        return space

    def add(self, namespace: str, entries: Sequence[VectorEntry]) -> None:
        with self._lock:
            if namespace in self._spaces:  # otherwise it is read whole on first search
                self._spaces[namespace].pending.extend(entries)

    def remove(self, ids: Collection[int]) -> None:
        with self._lock:
            for space in self._spaces.values():
                space.drop(ids)

    def clear(self) -> None:
        with self._lock:
            self._spaces.clear()

    def search(self, where: MemoryFilter, query: Vector, limit: int) -> list[tuple[int, float]]:
        with self._lock:
            space = self._loaded(where.namespace)
            space.consolidate()
            if space.matrix.size == 0 or limit <= 0:
                return []
            scores = space.matrix @ query.astype(np.float32)
            allowed = _mask(space, where)
            if allowed is not None:
                scores = np.where(allowed, scores, -np.inf)
            count = min(limit, int(np.isfinite(scores).sum()))
            if count == 0:
                return []
            best = np.argpartition(-scores, count - 1)[:count]
            best = best[np.argsort(-scores[best], kind="stable")]
            return [(int(space.ids[i]), float(scores[i])) for i in best]


def _mask(space: _Space, where: MemoryFilter) -> npt.NDArray[np.bool_] | None:
    conditions: list[npt.NDArray[np.bool_]] = []
    if where.session_id is not None or where.exclude_session is not None:
        sessions = np.array(space.sessions, dtype=object)
        if where.session_id is not None:
            conditions.append(sessions == where.session_id)
        if where.exclude_session is not None:
            conditions.append(sessions != where.exclude_session)
    if where.since is not None:
        conditions.append(space.times >= where.since)
    if where.until is not None:
        conditions.append(space.times <= where.until)
    if not conditions:
        return None
    mask = conditions[0]
    for condition in conditions[1:]:
        mask = mask & condition
    return mask
