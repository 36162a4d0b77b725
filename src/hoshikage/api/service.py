"""The inference service: what every route does between parsing a request and rendering it.

Routes (OpenAI, Ollama, native) build a job, open it with `async with service.chat(job) as
run`, and render `run.generation`'s events in their own wire format. The service acquires the
model from the manager, applies the context policy (drop oldest turns and report it, or
refuse), continues and stores named sessions, and cancels the generation if the route stops
reading early (a client that disconnected) — so the engine is freed within a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from hoshikage.config import Settings
from hoshikage.conversation.chat import answer_message
from hoshikage.engine import ChatMessage, EmbeddingResult, Generation, SamplingParams
from hoshikage.models.manager import ModelManager
from hoshikage.store import NewMessage, SessionRecord, SessionStore, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatJob:
    model: str
    messages: Sequence[ChatMessage]
    params: SamplingParams
    keep_alive: float | None = None
    session: str | None = None  # a session's id or name: continue it and store the turn


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


class InferenceService:
    def __init__(self, settings: Settings, manager: ModelManager, sessions: SessionStore) -> None:
        self._settings = settings
        self.manager = manager
        self.sessions = sessions
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def chat(self, job: ChatJob) -> AsyncIterator[Run]:
        session = await self._session(job.session, job.model) if job.session else None
        messages = await self._with_history(session, job.messages) if session else job.messages
        async with self.manager.use(job.model, keep_alive=job.keep_alive) as engine:
            prepared = await asyncio.to_thread(
                engine.prepare_chat,
                messages,
                job.params,
                drop_oldest=self._settings.context_overflow == "drop",
            )
            run = Run(
                model=job.model,
                generation=engine.generate(prepared, job.params),
                prompt_tokens=len(prepared.tokens),
                dropped_messages=prepared.dropped_messages,
                n_ctx=engine.n_ctx,
                session_id=session.id if session else None,
            )
            async with self._running(run):
                yield run
        if session is not None and run.generation.finish is not None:
            await self._store_turn(session, job.messages, run)

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
        self, model: str, inputs: Sequence[str], *, keep_alive: float | None = None
    ) -> EmbeddingResult:
        async with self.manager.use(model, keep_alive=keep_alive, embedding=True) as engine:
            self.in_flight += 1
            try:
                return await asyncio.wrap_future(engine.embed(list(inputs)))
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
    async def _session(self, reference: str, model: str) -> SessionRecord:
        def find_or_create() -> SessionRecord:
            try:
                return self.sessions.find(reference)
            except StoreError:
                return self.sessions.create(model=model, name=reference)

        return await asyncio.to_thread(find_or_create)

    async def _with_history(
        self, session: SessionRecord, messages: Sequence[ChatMessage]
    ) -> list[ChatMessage]:
        """A request that sends only its new message continues the stored conversation."""
        new = [m for m in messages if m.role != "system"]
        if len(new) != 1:
            return list(messages)  # the client sent the whole history itself
        stored = await asyncio.to_thread(self.sessions.messages, session.id)
        history = [
            ChatMessage(m.role, m.content)  # type: ignore[arg-type]
            for m in stored
            if m.role in ("user", "assistant")
        ]
        system = [m for m in messages if m.role == "system"]
        if not system and session.system_prompt:
            system = [ChatMessage("system", session.system_prompt)]
        return [*system, *history, *new]

    async def _store_turn(
        self, session: SessionRecord, messages: Sequence[ChatMessage], run: Run
    ) -> None:
        finish = run.generation.finish
        assert finish is not None
        question = next((m for m in reversed(messages) if m.role == "user"), None)
        turn = [] if question is None else [NewMessage(role="user", content=question.content)]
        turn.append(answer_message(run.generation.text, finish))
        await asyncio.to_thread(self.sessions.append, session.id, turn)
