"""Settings to memory: the bank, its vector index, its indexer, and context options."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hoshikage.config import Settings
from hoshikage.conversation.context import ContextBuilder, ContextOptions
from hoshikage.conversation.summary import ChatModel, Summarizer, SummaryOptions
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.embedder import Embedder, EngineEmbedder
from hoshikage.memory.indexer import MemoryIndexer
from hoshikage.memory.vectors import NumpyIndex, VectorIndex
from hoshikage.runtime import load_options, resolve_model
from hoshikage.store import Database, MemoryStore

log = logging.getLogger(__name__)


def context_builder(
    settings: Settings, model: ChatModel, summaries: MemoryStore, bank: MemoryBank | None
) -> ContextBuilder:
    """The context builder for a turn on `model`, as the settings configure it (the terminal
    chat and the server build theirs here)."""
    return ContextBuilder(
        model,
        bank=bank,
        summarizer=Summarizer(model, summaries, bank, summary_options(settings)),
        options=context_options(settings),
    )


def context_options(settings: Settings) -> ContextOptions:
    return ContextOptions(
        memory=settings.memory,
        top_k=settings.memory_top_k,
        memory_tokens=settings.memory_tokens,
        summaries=settings.summaries,
    )


def summary_options(settings: Settings) -> SummaryOptions:
    return SummaryOptions(
        max_tokens=settings.summary_max_tokens,
        cluster_divisor=settings.cluster_divisor,
        min_clusters=settings.min_clusters,
        max_clusters=max(settings.max_clusters, settings.min_clusters),
    )


def vector_index(settings: Settings, store: MemoryStore, space: str) -> VectorIndex:
    if settings.memory_backend == "chroma":
        from hoshikage.memory.chroma import ChromaIndex

        return ChromaIndex.from_settings(settings, store, space)
    return NumpyIndex(store, space)


def local_embedder(settings: Settings) -> EngineEmbedder | None:
    """The configured embedding model, run in this process (terminal chat, CLI)."""
    if not settings.embedding_model:
        return None
    return EngineEmbedder(resolve_model(settings.embedding_model, settings), load_options(settings))


def memory_bank(settings: Settings, database: Database, embedder: Embedder | None) -> MemoryBank:
    store = MemoryStore(database)
    index = None if embedder is None else vector_index(settings, store, embedder.space)
    return MemoryBank(store, embedder, index=index, min_score=settings.memory_min_score)


@dataclass
class LocalMemory:
    """Memory for one user in this process: the bank, and the thread that fills it."""

    bank: MemoryBank
    indexer: MemoryIndexer
    embedder: EngineEmbedder | None

    @classmethod
    def open(cls, settings: Settings, database: Database) -> LocalMemory:
        embedder = local_embedder(settings)
        bank = memory_bank(settings, database, embedder)
        return cls(bank, MemoryIndexer(bank), embedder)

    def close(self) -> None:
        self.indexer.close()
        if self.embedder is not None:
            self.embedder.close()
