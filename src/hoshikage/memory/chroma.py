"""Memory vectors in Chroma (`pip install 'hoshikage[chroma]'`): embedded, or a Chroma server.

The SQLite store stays the source of truth (texts, keyword index, the vectors themselves);
Chroma holds a copy of one vector space's vectors, one collection per space, and is brought
back in step with the store when it is opened.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlparse

from hoshikage.config import Settings
from hoshikage.memory.vectors import Vector, VectorEntry, from_blob
from hoshikage.store import MemoryFilter, MemoryStore

log = logging.getLogger(__name__)

_BATCH = 512  # vectors per call to Chroma


class ChromaUnavailableError(RuntimeError):
    """chromadb is not installed, or the Chroma server cannot be reached."""


def collection_name(space: str) -> str:
    """A Chroma collection name (3-512 of [a-zA-Z0-9._-]) for a vector space."""
    return "hoshikage-" + hashlib.sha256(space.encode("utf-8")).hexdigest()[:24]


class ChromaIndex:
    def __init__(self, client: Any, store: MemoryStore, space: str) -> None:
        self._client = client
        self._store = store
        self._space = space
        self._lock = threading.Lock()
        # Per namespace, the store's (count, highest id) when Chroma was last in step with it.
        self._synced: dict[str, tuple[int, int]] = {}
        self._collection = self._open_collection()

    @classmethod
    def from_settings(cls, settings: Settings, store: MemoryStore, space: str) -> ChromaIndex:
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings
        except ImportError as exc:
            raise ChromaUnavailableError(
                "memory_backend is 'chroma' but chromadb is not installed: "
                "pip install 'hoshikage[chroma]'"
            ) from exc
        # Local-first: Chroma's anonymous usage reporting stays off.
        private = ChromaSettings(anonymized_telemetry=False)
        try:
            if settings.chroma_url:
                url = urlparse(settings.chroma_url)
                client = chromadb.HttpClient(
                    host=url.hostname or "127.0.0.1",
                    port=url.port or (443 if url.scheme == "https" else 8000),
                    ssl=url.scheme == "https",
                    settings=private,
                )
            else:
                path = settings.chroma_path or settings.data_dir / "chroma"
                client = chromadb.PersistentClient(path=str(path), settings=private)
        except Exception as exc:
            where = settings.chroma_url or "the embedded store"
            raise ChromaUnavailableError(f"cannot open Chroma at {where}: {exc}") from exc
        return cls(client, store, space)

    def _open_collection(self) -> Any:
        return self._client.get_or_create_collection(
            collection_name(self._space),
            metadata={"hnsw:space": "cosine", "hoshikage_space": self._space},
        )

    # --- VectorIndex -----------------------------------------------------------------------
    def add(self, namespace: str, entries: Sequence[VectorEntry]) -> None:
        with self._lock:
            self._upsert(namespace, entries)
            if namespace in self._synced:  # in step still: these are the store's new rows
                self._synced[namespace] = self._store.fingerprint(namespace, self._space)

    def remove(self, ids: Collection[int]) -> None:
        with self._lock:
            if ids:
                self._collection.delete(ids=[str(i) for i in ids])
                self._synced.clear()

    def clear(self) -> None:
        with self._lock:
            self._client.delete_collection(collection_name(self._space))
            self._collection = self._open_collection()
            self._synced.clear()

    def search(self, where: MemoryFilter, query: Vector, limit: int) -> list[tuple[int, float]]:
        with self._lock:
            self._sync(where.namespace)
            if limit <= 0 or self._collection.count() == 0:
                return []
            result = self._collection.query(
                query_embeddings=[query.tolist()],
                n_results=limit,
                where=_where(where),
                include=["distances"],
            )
        ids, distances = result["ids"][0], result["distances"][0]
        # Chroma's cosine distance is 1 - cosine similarity.
        return [(int(i), 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    # --- keeping in step with the store ----------------------------------------------------
    def _sync(self, namespace: str) -> None:
        """Add what the store has and Chroma lacks; drop what the store no longer has."""
        fingerprint = self._store.fingerprint(namespace, self._space)
        if self._synced.get(namespace) == fingerprint:
            return
        stored = self._store.vectors(namespace, self._space)
        present = set(self._collection.get(where={"namespace": namespace}, include=[])["ids"])
        wanted = {str(i) for i in stored.ids}
        missing = [
            VectorEntry(i, from_blob(blob), session, created)
            for i, blob, session, created in zip(
                stored.ids, stored.blobs, stored.session_ids, stored.created_at, strict=True
            )
            if str(i) not in present
        ]
        self._upsert(namespace, missing)
        extra = present - wanted
        if extra:
            self._collection.delete(ids=sorted(extra))
        if missing or extra:
            log.info(
                "Chroma brought in step with the store for %s: %d added, %d removed",
                namespace,
                len(missing),
                len(extra),
            )
        self._synced[namespace] = fingerprint

    def _upsert(self, namespace: str, entries: Sequence[VectorEntry]) -> None:
        for start in range(0, len(entries), _BATCH):
            chunk = entries[start : start + _BATCH]
            self._collection.upsert(
                ids=[str(entry.id) for entry in chunk],
                embeddings=[entry.vector.tolist() for entry in chunk],
                metadatas=[
                    {
                        "namespace": namespace,
                        "session_id": entry.session_id or "",
                        "created_at": entry.created_at,
                    }
                    for entry in chunk
                ],
            )


def _where(where: MemoryFilter) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{"namespace": where.namespace}]
    if where.session_id is not None:
        clauses.append({"session_id": where.session_id})
    if where.exclude_session is not None:
        clauses.append({"session_id": {"$ne": where.exclude_session}})
    if where.since is not None:
        clauses.append({"created_at": {"$gte": where.since}})
    if where.until is not None:
        clauses.append({"created_at": {"$lte": where.until}})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
