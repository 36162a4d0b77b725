"""The turn pipeline: everything every API does between parsing a request and rendering it.

A wire-format module parses its request into a `TurnRequest` (or a `CompletionJob`), opens
it with `async with service.chat(request) as run`, and renders `run.events()` — typed,
wire-neutral events — in its own JSON, SSE or NDJSON. Here, once for every API: the model is
acquired (loaded on demand); the request's tools and thinking are checked and planned for the
model's template; a named session's context is built (memories, summary, recent turns) or
the client's history is fitted to the window, and what was dropped is counted; the answer's
text is parsed into reasoning, text and tool calls as it streams; every generation is
counted in the metrics when the engine ends it, cancelled ones too; the turn is stored; and a
generation whose reader stopped (a client that disconnected) is cancelled, so the engine is
free within a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hoshikage.config import Settings
from hoshikage.conversation.chat import answer_message, history_of, new_messages, stored_message
from hoshikage.conversation.context import BuiltContext, ContextReport
from hoshikage.conversation.summary import HistoryMessage
from hoshikage.engine import (
    ChatMessage,
    EmbeddingResult,
    Engine,
    FinishEvent,
    Generation,
    PreparedPrompt,
    SamplingParams,
    TokenEvent,
)
from hoshikage.engine.types import TokenLogprob
from hoshikage.memory.bank import MemoryBank
from hoshikage.memory.indexer import MemoryIndexer
from hoshikage.memory.setup import context_builder
from hoshikage.models.manager import ModelManager
from hoshikage.store import MemoryStore, SessionRecord, SessionStore, StoreError
from hoshikage.store.sessions import owner_of
from hoshikage.turns.answer import AnswerParser
from hoshikage.turns.tooling import (
    TurnPlan,
    answer_parser,
    check_history,
    check_request,
    plan_turn,
)
from hoshikage.turns.vocabulary import (
    TextDelta,
    TurnEvent,
    TurnFinished,
    TurnFinishReason,
    TurnRequest,
    TurnRequestError,
)

log = logging.getLogger(__name__)

FinishObserver = Callable[[FinishEvent, str], None]  # (how it ended, the model's name)


@dataclass(frozen=True)
class CompletionJob:
    """A raw prompt (text, or token ids), continued without a chat template."""

    model: str
    prompt: str | Sequence[int]
    params: SamplingParams
    keep_alive: float | None = None


@dataclass
class TurnRun:
    """A generation in progress, with what was decided before it started.

    `start()` waits for the engine's first event (so that a failure is an HTTP error, not a
    line of a stream); `events()` then yields the turn's neutral events, ending with one
    `TurnFinished`, which stays in `finished`.
    """

    model: str  # the model's own name (for metrics and the log)
    generation: Generation
    parser: AnswerParser
    prompt_tokens: int
    dropped_messages: int
    n_ctx: int
    plan: TurnPlan | None = None  # None for a raw completion
    session_id: str | None = None
    context: ContextReport | None = None  # what the context builder put in (sessions)
    load_s: float = 0.0
    finished: TurnFinished | None = None
    _engine_events: AsyncIterator[TokenEvent | FinishEvent] | None = field(default=None, repr=False)
    _first: TokenEvent | FinishEvent | None = field(default=None, repr=False)
    _logprobs: list[TokenLogprob] = field(default_factory=list, repr=False)
    _logprobs_given: int = field(default=0, repr=False)  # how many rode with text already

    async def start(self) -> None:
        self._engine_events = aiter(self.generation)
        self._first = await anext(self._engine_events)

    async def events(self) -> AsyncIterator[TurnEvent]:
        if self._engine_events is None:
            await self.start()
        assert self._engine_events is not None
        pending, self._first = self._first, None
        while True:
            event = pending if pending is not None else await anext(self._engine_events, None)
            pending = None
            if event is None:
                return
            if isinstance(event, TokenEvent):
                self._logprobs += event.logprobs
                for answer_event in self.parser.feed(event.text):
                    yield self._with_logprobs(answer_event)
                continue
            for answer_event in self.parser.finish():
                yield self._with_logprobs(answer_event)
            self.finished = self._finished(event)
            yield self.finished
            return

    async def finish(self) -> TurnFinished:
        """Read to the end; the whole answer is in the result."""
        async for _ in self.events():
            pass
        assert self.finished is not None
        return self.finished

    def _with_logprobs(self, event: TurnEvent) -> TurnEvent:
        """Text carries the logprobs of the tokens sampled since the last text."""
        if not isinstance(event, TextDelta) or self._logprobs_given == len(self._logprobs):
            return event
        pending = tuple(self._logprobs[self._logprobs_given :])
        self._logprobs_given = len(self._logprobs)
        return dataclasses.replace(event, logprobs=pending)

    def _finished(self, event: FinishEvent) -> TurnFinished:
        reason: TurnFinishReason = event.finish_reason
        if self.parser.calls and reason == "stop":
            reason = "tool_calls"
        return TurnFinished(
            finish_reason=reason,
            text=self.parser.text,
            reasoning=self.parser.reasoning,
            tool_calls=tuple(self.parser.calls),
            usage=event.usage,
            timings=event.timings,
            load_s=self.load_s,
            dropped_messages=self.dropped_messages,
            context=self.context,
            logprobs=tuple(self._logprobs),
        )

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
        self.observe_finish: FinishObserver | None = None  # the metrics, once they exist
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def chat(self, request: TurnRequest) -> AsyncIterator[TurnRun]:
        """One answer to a turn."""
        async with self.chat_choices(request, 1) as runs:
            yield runs[0]

    @contextlib.asynccontextmanager
    async def chat_choices(self, request: TurnRequest, n: int) -> AsyncIterator[list[TurnRun]]:
        """`n` answers to one turn, its prompt evaluated once (OpenAI's `n`)."""
        check_request(request)
        if n > 1 and request.session:
            raise TurnRequestError("n > 1 cannot be stored in a session: which answer?", param="n")
        session = await self._session(request) if request.session else None
        drop_oldest = self._settings.context_overflow == "drop"
        started = time.time()
        async with self.manager.use(request.model, keep_alive=request.keep_alive) as engine:
            load_s = self._load_seconds(request.model, started)
            built = None
            if session is not None:
                built = await asyncio.to_thread(self._build_context, engine, session, request)
            planned = request if built is None else _with_messages(request, built.messages)
            check_history(planned.messages)
            plan = plan_turn(planned, engine.template, request.model)
            prepared = await asyncio.to_thread(
                engine.prepare_chat,
                plan.messages,
                plan.params,
                drop_oldest=drop_oldest,
                render=plan.render,
            )
            if plan.tool_format is not None:
                log.debug("tools offered in the %s format", plan.format_label)
            report = built.report if built else None
            generations = engine.generate_choices(prepared, plan.params, n)
            runs = [
                TurnRun(
                    model=self.manager.resolve(request.model).name,
                    generation=generation,
                    parser=answer_parser(plan, prepared),
                    prompt_tokens=len(prepared.tokens),
                    dropped_messages=prepared.dropped_messages
                    + (report.dropped_messages if report else 0),
                    n_ctx=engine.n_ctx,
                    plan=plan,
                    session_id=session.id if session else None,
                    context=report,
                    load_s=load_s,
                )
                for generation in generations
            ]
            if report is not None and session is not None:
                log.info("session %s context: %s", session.id[:8], report.describe())
            async with self._running(runs):
                yield runs
        if session is not None and runs[0].finished is not None:
            await self._store_turn(session, request, runs[0])

    @contextlib.asynccontextmanager
    async def complete(self, job: CompletionJob, n: int = 1) -> AsyncIterator[list[TurnRun]]:
        """`n` continuations of a raw prompt (no chat template), evaluated once."""
        started = time.time()
        async with self.manager.use(job.model, keep_alive=job.keep_alive) as engine:
            load_s = self._load_seconds(job.model, started)
            prepared: PreparedPrompt = await asyncio.to_thread(
                engine.prepare_completion, job.prompt, job.params
            )
            generations = engine.generate_choices(prepared, job.params, n)
            runs = [
                TurnRun(
                    model=self.manager.resolve(job.model).name,
                    generation=generation,
                    parser=AnswerParser(),
                    prompt_tokens=len(prepared.tokens),
                    dropped_messages=0,
                    n_ctx=engine.n_ctx,
                    load_s=load_s,
                )
                for generation in generations
            ]
            async with self._running(runs):
                yield runs

    def _build_context(
        self, engine: Engine, session: SessionRecord, request: TurnRequest
    ) -> BuiltContext:
        """A session's turn: stored history (or the client's), memories, summary (a thread)."""
        system = [m.content for m in request.messages if m.role == "system"]
        new = [m for m in request.messages if m.role != "system"]
        if request.history_stored or len(new) == 1:  # continue the stored conversation
            history = history_of(self.sessions.messages(session.id))
            history += [HistoryMessage(m.role, m.content, chat_message=m) for m in new[:-1]]
        else:  # the client sent the whole history itself
            history = [HistoryMessage(m.role, m.content, chat_message=m) for m in new[:-1]]
        if not new or new[-1].role != "user":  # not a new question: the history as it is
            heads = [ChatMessage("system", text) for text in system]
            kept = [*heads, *(m.chat for m in history), *new[-1:]]
            return BuiltContext(kept, ContextReport(history_messages=len(history)))
        builder = context_builder(self._settings, engine, self.summaries, self.bank)
        return builder.build(
            system_prompt="\n\n".join(system) or session.system_prompt,
            history=history,
            user_text=new[-1].content,
            params=request.params,
            namespace=request.namespace,
            session_id=session.id,
            use_memory=request.memory,
            drop_oldest=self._settings.context_overflow == "drop",
        )

    async def count_tokens(self, request: TurnRequest) -> int:
        """The prompt tokens a turn would take (tools and tool prompt included)."""
        check_request(request)
        check_history(request.messages)
        async with self.manager.use(request.model, keep_alive=request.keep_alive) as engine:
            plan = plan_turn(request, engine.template, request.model)
            return await asyncio.to_thread(
                engine.count_chat_tokens, plan.messages, render=plan.render
            )

    async def embed(
        self,
        model: str,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        keep_alive: float | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult:
        """Vectors of `inputs` (texts, or token ids); with `truncate`, inputs over the
        window are cut to it."""
        async with self.manager.use(model, keep_alive=keep_alive, embedding=True) as engine:
            self.in_flight += 1
            try:
                future = await asyncio.to_thread(engine.embed, inputs, truncate=truncate)
                return await asyncio.wrap_future(future)
            finally:
                self.in_flight -= 1

    def _load_seconds(self, name: str, started: float) -> float:
        """How long this request waited for its model to load (0 when it was loaded)."""
        loaded_at = self.manager.loaded_at(name)
        return max(0.0, loaded_at - started) if loaded_at and loaded_at >= started else 0.0

    @contextlib.asynccontextmanager
    async def _running(self, runs: Sequence[TurnRun]) -> AsyncIterator[None]:
        observe = self.observe_finish
        if observe is not None:
            for run in runs:
                run.generation.on_finish(_counted_as(observe, run.model))
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            for run in runs:
                if run.generation.finish is None:
                    # The route stopped reading (client gone, or an error): free the engine.
                    run.generation.cancel()

    # --- sessions ------------------------------------------------------------------------
    async def _session(self, request: TurnRequest) -> SessionRecord:
        reference = request.session
        assert reference is not None

        def find_or_create() -> SessionRecord:
            try:  # only among the sessions of the request's own key
                return self.sessions.find(reference, owner=owner_of(request.namespace))
            except StoreError:
                return self.sessions.create(
                    model=request.model, name=reference, namespace=request.namespace
                )

        return await asyncio.to_thread(find_or_create)

    async def _store_turn(self, session: SessionRecord, request: TurnRequest, run: TurnRun) -> None:
        """The request's new messages and the answer, in one transaction."""
        finished, finish = run.finished, run.generation.finish
        assert finished is not None and finish is not None
        turn = [stored_message(m, remember=request.memory) for m in new_messages(request.messages)]
        answer = answer_message(
            finished.text,
            finish,
            finish_reason=finished.finish_reason,
            tool_calls=finished.tool_calls,
            reasoning=finished.reasoning,
        )
        turn.append(dataclasses.replace(answer, remember=request.memory))
        await asyncio.to_thread(self.sessions.append, session.id, turn)
        if self.indexer is not None:
            self.indexer.notify()


def _counted_as(observe: FinishObserver, model: str) -> Callable[[FinishEvent], None]:
    return lambda finish: observe(finish, model)


def _with_messages(request: TurnRequest, messages: Sequence[ChatMessage]) -> TurnRequest:
    return dataclasses.replace(request, messages=tuple(messages))
