"""A conversation in progress: history, system prompt and parameters, stored turn by turn.

Front ends (the terminal chat now, the server later) start a turn, consume its event
stream however they like, then commit it. Committing writes the user message and the answer
in one transaction, so an acknowledged turn is never lost and never half-stored.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hoshikage.conversation.context import (
    BuiltContext,
    ContextBuilder,
    ContextOptions,
    ContextReport,
)
from hoshikage.conversation.summary import HistoryMessage
from hoshikage.engine import (
    ChatMessage,
    Engine,
    FinishEvent,
    Generation,
    SamplingParams,
    TokenEvent,
    ToolCall,
)
from hoshikage.store import MessageRecord, NewMessage, SessionRecord, SessionStore
from hoshikage.turns.answer import AnswerParser
from hoshikage.turns.tooling import answer_parser, plan_turn
from hoshikage.turns.vocabulary import AnswerEvent, TurnRequest

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """One question, the generation answering it, and what its context held. `parser`
    reads the answer as it streams (thinking apart from text), as the server's turns do."""

    user_text: str
    generation: Generation
    report: ContextReport = field(default_factory=ContextReport)
    remember: bool = True
    parser: AnswerParser = field(default_factory=AnswerParser)
    _read: bool = field(default=False, repr=False)

    def read(self) -> Iterator[AnswerEvent]:
        """The answer's events as the engine produces them (thinking, text)."""
        self._read = True
        for event in self.generation:
            if isinstance(event, TokenEvent):
                yield from self.parser.feed(event.text)
        yield from self.parser.finish()

    def parsed(self) -> AnswerParser:
        """The parser, having read the whole answer (also when it was consumed directly from
        the generation rather than through read())."""
        if not self._read:
            self._read = True
            self.parser.feed(self.generation.text)
            self.parser.finish()
        return self.parser


@dataclass
class ConversationStats:
    """Totals over the turns of this conversation in this process."""

    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    last: FinishEvent | None = None
    dropped_messages_last: int = field(default=0)

    def add(self, finish: FinishEvent) -> None:
        self.turns += 1
        self.prompt_tokens += finish.usage.prompt_tokens
        self.completion_tokens += finish.usage.completion_tokens
        self.cached_prompt_tokens += finish.usage.cached_prompt_tokens
        self.decode_tokens += finish.timings.decode_tokens
        self.decode_seconds += finish.timings.decode_s
        self.total_seconds += finish.timings.total_s
        self.last = finish
        self.dropped_messages_last = finish.dropped_messages

    @property
    def mean_decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


def answer_message(
    text: str,
    finish: FinishEvent,
    *,
    finish_reason: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
    reasoning: str = "",
) -> NewMessage:
    """The stored form of an answer: its text (thinking and calls beside it) with the
    tokens and timings it took."""
    return NewMessage(
        role="assistant",
        content=text,
        prompt_tokens=finish.usage.prompt_tokens,
        completion_tokens=finish.usage.completion_tokens,
        ttft_s=finish.timings.time_to_first_token_s,
        decode_tokens_per_s=finish.timings.decode_tokens_per_s,
        total_s=finish.timings.total_s,
        finish_reason=finish_reason or finish.finish_reason,
        tool_calls=tuple((call.id, call.name, call.arguments) for call in tool_calls),
        reasoning=reasoning or None,
    )


def stored_message(message: ChatMessage, *, remember: bool = True) -> NewMessage:
    """A client's message (a question, a tool's result) in its stored form."""
    return NewMessage(
        role=message.role,
        content=message.content,
        remember=remember,
        tool_calls=tuple((call.id, call.name, call.arguments) for call in message.tool_calls),
        tool_call_id=message.tool_call_id,
        tool_name=message.name,
    )


def chat_message_of(record: MessageRecord) -> ChatMessage:
    """A stored message as the engine takes it, with its calls and thinking."""
    return ChatMessage(
        record.role,  # type: ignore[arg-type]  # the store's CHECK keeps it a Role
        record.content,
        tool_calls=tuple(ToolCall(i, n, a) for i, n, a in record.tool_calls),
        tool_call_id=record.tool_call_id,
        name=record.tool_name,
        reasoning=record.reasoning,
    )


def history_of(records: Sequence[MessageRecord]) -> list[HistoryMessage]:
    """Stored messages (not the system prompt) as the history a context is built from."""
    return [
        HistoryMessage(r.role, r.content, r.id, r.remember, chat_message=chat_message_of(r))
        for r in records
        if r.role != "system"
    ]


def new_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """What a request adds to a stored conversation: the messages after the last answer
    (a question, or the results of the calls the answer made)."""
    added: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role in ("assistant", "system"):
            break
        added.append(message)
    return added[::-1]


def sampling_to_dict(params: SamplingParams) -> dict[str, Any]:
    return asdict(params)


def sampling_from_dict(data: dict[str, Any], defaults: SamplingParams) -> SamplingParams:
    """Parameters saved with a session (JSON), over the current defaults; unknown keys ignored."""
    merged = {**asdict(defaults), **{k: v for k, v in data.items() if k in asdict(defaults)}}
    merged["stop"] = tuple(merged["stop"] or ())
    merged["grammar_triggers"] = tuple(merged["grammar_triggers"] or ())
    merged["logit_bias"] = tuple((int(t), float(b)) for t, b in merged["logit_bias"] or ())
    return SamplingParams(**merged)


class Conversation:
    def __init__(
        self,
        sessions: SessionStore,
        *,
        system_prompt: str | None,
        params: SamplingParams,
        model_label: str | None = None,
        session: SessionRecord | None = None,
        history: list[HistoryMessage] | None = None,
    ) -> None:
        self._sessions = sessions
        self.system_prompt = system_prompt
        self.params = params
        self.model_label = model_label
        self.session = session
        self.history: list[HistoryMessage] = list(history or [])
        self.stats = ConversationStats()
        self.last_report: ContextReport | None = None

    @classmethod
    def resume(
        cls, sessions: SessionStore, session: SessionRecord, *, defaults: SamplingParams
    ) -> Conversation:
        """Continue a stored session with its history, system prompt and parameters."""
        history = history_of(sessions.messages(session.id))
        return cls(
            sessions,
            system_prompt=session.system_prompt,
            params=sampling_from_dict(session.params, defaults),
            model_label=session.model,
            session=session,
            history=history,
        )

    def start_turn(
        self,
        engine: Engine,
        user_text: str,
        builder: ContextBuilder | None = None,
        *,
        remember: bool = True,
    ) -> Turn:
        """Build the turn's context (memories, summary, recent turns) and start answering.

        Without a builder the oldest turns that do not fit are dropped, and nothing is
        recalled. `remember` False keeps this turn out of long-term memory, and out of it
        too the recall for this turn."""
        builder = builder or ContextBuilder(
            engine,
            bank=None,
            summarizer=None,
            options=ContextOptions(memory=False, summaries=False),
        )
        built: BuiltContext = builder.build(
            system_prompt=self.system_prompt,
            history=self.history,
            user_text=user_text,
            params=self.params,
            namespace=self.namespace,
            session_id=self.session.id if self.session else None,
            use_memory=remember,
        )
        request = TurnRequest(self.model_label or "", built.messages, self.params)
        plan = plan_turn(request, engine.template)
        prepared = engine.prepare_chat(plan.messages, plan.params, render=plan.render)
        self.last_report = built.report
        generation = engine.generate(prepared, plan.params)
        return Turn(
            user_text, generation, built.report, remember, parser=answer_parser(plan, prepared)
        )

    @property
    def namespace(self) -> str:
        return self.session.namespace if self.session else "local"

    def commit(self, turn: Turn) -> None:
        """Store a finished turn (a cancelled one keeps what was shown) and add it to history."""
        finish = turn.generation.finish
        if finish is None:
            raise RuntimeError("commit() needs a finished generation")
        # What was shown: the text, with the thinking kept beside it (never as the answer).
        parsed = turn.parsed()
        answer = answer_message(parsed.text, finish, reasoning=parsed.reasoning)
        session = self.ensure_saved()
        stored = self._sessions.append(
            session.id,
            [
                NewMessage(role="user", content=turn.user_text, remember=turn.remember),
                dataclasses.replace(answer, remember=turn.remember),
            ],
        )
        self.history += history_of(stored)
        self.stats.add(finish)

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """Values given explicitly (e.g. command-line flags) win over the stored session's."""
        fields = sampling_to_dict(self.params)
        given = {k: v for k, v in overrides.items() if k in fields and v is not None}
        if "stop" in given:
            given["stop"] = tuple(given["stop"])
        if given:
            self.params = dataclasses.replace(self.params, **given)
        if overrides.get("system") is not None:
            self.system_prompt = overrides["system"] or None
        if given or overrides.get("system") is not None:
            self.save_settings()

    def ensure_saved(self) -> SessionRecord:
        """The stored session, created on first need so that idle starts leave no trace."""
        if self.session is None:
            self.session = self._sessions.create(
                model=self.model_label,
                system_prompt=self.system_prompt,
                params=sampling_to_dict(self.params),
            )
        return self.session

    def save_settings(self) -> None:
        """Record a changed system prompt, model or parameters on the stored session."""
        if self.session is not None:
            self._sessions.update(
                self.session.id,
                model=self.model_label,
                system_prompt=self.system_prompt,
                params=sampling_to_dict(self.params),
            )

    def rename(self, name: str) -> SessionRecord:
        session = self.ensure_saved()
        self.session = self._sessions.rename(session.id, name)
        return self.session
