"""The inference service: what every route does between parsing a request and rendering it.

Routes (OpenAI, Ollama, native) build a job, open it with `async with service.chat(job) as
run`, and render `run.generation`'s events in their own wire format. The service acquires the
model from the manager, applies the context policy (drop oldest turns and report it, or
refuse), continues and stores named sessions, and cancels the generation if the route stops
reading early (a client that disconnected) — so the engine is freed within a step.

A turn in a named session has its context built by the context builder (relevant memories
of the namespace, the summary of older turns, recent turns); once stored, the memory indexer
is told, and remembers it off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from hoshikage.config import Settings
from hoshikage.conversation.chat import answer_message
from hoshikage.conversation.context import BuiltContext, ContextReport
from hoshikage.conversation.summary import HistoryMessage
from hoshikage.engine import ChatMessage, EmbeddingResult, Engine, Generation, SamplingParams
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.indexer import MemoryIndexer
from hoshikage.memory.setup import context_builder
from hoshikage.models.manager import ModelManager
from hoshikage.store import MemoryStore, NewMessage, SessionRecord, SessionStore, StoreError
from hoshikage.store.sessions import owner_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatJob:
    model: str
    messages: Sequence[ChatMessage]
    params: SamplingParams
    keep_alive: float | None = None
    session: str | None = None  # a session's id or name: continue it and store the turn
    namespace: str = "local"  # whose memory: an API key's, a `user`'s, or the local user's
    memory: bool = True  # False: recall nothing for this turn and never remember it


@dataclass(frozen=True)
class CompletionJob:
    model: str
    prompt: str
    params: SamplingParams
    keep_alive: float | None = None


@dataclass
class Run:
    """A generation in progress, with what was decided before it started."""

    model: str
    generation: Generation
    prompt_tokens: int
    dropped_messages: int
    n_ctx: int
    session_id: str | None = None
    context: ContextReport | None = None  # what the context builder put in (sessions)

    def context_fields(self) -> dict[str, Any]:
        """Response fields saying what the context held (memories used, summarised turns)."""
        return {} if self.context is None else {"hoshikage": {"context": self.context.as_dict()}}


class InferenceService:
    def __init__(
        self,
        settings: Settings,
        manager: ModelManager,
        sessions: SessionStore,
        *,
        bank: MemoryBank | None = None,
    ) -> None:
        self._settings = settings
        self.manager = manager
        self.sessions = sessions
        self.bank = bank
        self.summaries = MemoryStore(sessions.database)
        self.indexer: MemoryIndexer | None = None  # started with the server
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def chat(self, job: ChatJob) -> AsyncIterator[Run]:
        session = await self._session(job) if job.session else None
        drop_oldest = self._settings.context_overflow == "drop"
        async with self.manager.use(job.model, keep_alive=job.keep_alive) as engine:
            built = None
            if session is not None:
                built = await asyncio.to_thread(self._build_context, engine, session, job)
            prepared = await asyncio.to_thread(
                engine.prepare_chat,
                built.messages if built else job.messages,
                job.params,
                drop_oldest=drop_oldest,
            )
            report = built.report if built else None
            run = Run(
                model=job.model,
                generation=engine.generate(prepared, job.params),
                prompt_tokens=len(prepared.tokens),
                dropped_messages=prepared.dropped_messages
                + (report.dropped_messages if report else 0),
                n_ctx=engine.n_ctx,
                session_id=session.id if session else None,
                context=report,
            )
            if report is not None:
                log.info(
                    "session %s context: %s", session.id[:8] if session else "", report.describe()
                )
            async with self._running(run):
                yield run
        if session is not None and run.generation.finish is not None:
            await self._store_turn(session, job, run)

    def _build_context(self, engine: Engine, session: SessionRecord, job: ChatJob) -> BuiltContext:
        """A session's turn: stored history (or the client's), memories, summary (a thread)."""
        system = [m.content for m in job.messages if m.role == "system"]
        new = [m for m in job.messages if m.role != "system"]
        if len(new) == 1:  # only the new message: continue the stored conversation
            history = [
                HistoryMessage(m.role, m.content, m.id, m.remember)
                for m in self.sessions.messages(session.id)
                if m.role in ("user", "assistant")
            ]
        else:  # the client sent the whole history itself
            history = [HistoryMessage(m.role, m.content) for m in new[:-1]]
        if not new or new[-1].role != "user":  # not a new question: the history as it is
            heads = [ChatMessage("system", text) for text in system]
            kept = [*heads, *(m.chat for m in history), *new[-1:]]
            return BuiltContext(kept, ContextReport(history_messages=len(history)))
        builder = context_builder(self._settings, engine, self.summaries, self.bank)
        return builder.build(
            system_prompt="\n\n".join(system) or session.system_prompt,
            history=history,
            user_text=new[-1].content,
            params=job.params,
            namespace=job.namespace,
            session_id=session.id,
            use_memory=job.memory,
            drop_oldest=self._settings.context_overflow == "drop",
        )

    @contextlib.asynccontextmanager
    async def complete(self, job: CompletionJob) -> AsyncIterator[Run]:
        async with self.manager.use(job.model, keep_alive=job.keep_alive) as engine:
            prepared = await asyncio.to_thread(engine.prepare_completion, job.prompt, job.params)
            run = Run(
                model=job.model,
                generation=engine.generate(prepared, job.params),
                prompt_tokens=len(prepared.tokens),
                dropped_messages=0,
                n_ctx=engine.n_ctx,
            )
            async with self._running(run):
                yield run

    async def embed(
        self,
        model: str,
        inputs: Sequence[str],
        *,
        keep_alive: float | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult:
        """Vectors of `inputs`; with `truncate`, inputs over the window are cut to it."""
        async with self.manager.use(model, keep_alive=keep_alive, embedding=True) as engine:
            self.in_flight += 1
            try:
                future = await asyncio.to_thread(engine.embed, list(inputs), truncate=truncate)
                return await asyncio.wrap_future(future)
            finally:
                self.in_flight -= 1

    @contextlib.asynccontextmanager
    async def _running(self, run: Run) -> AsyncIterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if run.generation.finish is None:
                # The route stopped reading (client gone, or an error): free the engine now.
                run.generation.cancel()

    # --- sessions ------------------------------------------------------------------------
    async def _session(self, job: ChatJob) -> SessionRecord:
        reference = job.session
        assert reference is not None

        def find_or_create() -> SessionRecord:
            try:  # only among the sessions of the request's own key
                return self.sessions.find(reference, owner=owner_of(job.namespace))
            except StoreError:
                return self.sessions.create(
                    model=job.model, name=reference, namespace=job.namespace
                )

        return await asyncio.to_thread(find_or_create)

    async def _store_turn(self, session: SessionRecord, job: ChatJob, run: Run) -> None:
        finish = run.generation.finish
        assert finish is not None
        question = next((m for m in reversed(job.messages) if m.role == "user"), None)
        turn = (
            []
            if question is None
            else [NewMessage(role="user", content=question.content, remember=job.memory)]
        )
        answer = answer_message(run.generation.text, finish)
        turn.append(dataclasses.replace(answer, remember=job.memory))
        await asyncio.to_thread(self.sessions.append, session.id, turn)
        if self.indexer is not None:
            self.indexer.notify()
