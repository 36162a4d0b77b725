"""How a turn's tools and thinking reach the model: the checks, the prompt, the grammar.

`check_request` refuses what cannot be honoured, in neutral terms. `plan_turn` decides, for
one model's chat template, what the template is given (tools, `enable_thinking`), what the
system prompt gains when the template cannot lay tools out itself, and what grammar the
answer must follow: a forced call (`required`, a named function) is constrained from the
first token; `auto` gets a lazy grammar that starts at the format's call marker, so a call's
arguments always match their schema while free text stays free; `none` offers nothing.
`answer_parser` then reads the answer back in the same format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hoshikage.engine import ChatMessage, EngineError, PreparedPrompt, RenderOptions
from hoshikage.engine.grammar import json_schema_grammar
from hoshikage.engine.templates import ChatTemplate
from hoshikage.engine.types import SamplingParams, ToolSpec
from hoshikage.toolformats.base import ToolFormat
from hoshikage.toolformats.registry import detect_format
from hoshikage.turns.answer import AnswerParser
from hoshikage.turns.reasoning import (
    ReasoningSplitter,
    ThinkingTags,
    opens_thinking,
    template_thinks,
    thinking_tags_of,
)
from hoshikage.turns.vocabulary import TurnRequest, TurnRequestError

log = logging.getLogger(__name__)

# OpenAI's rule for function names, with dots allowed (MCP servers' tools are `server.tool`).
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_request(request: TurnRequest) -> None:
    """Refuse tools and choices that cannot be honoured (TurnRequestError); the history is
    checked by `check_history` once a session's stored turns are part of it."""
    use = request.tool_use
    names: set[str] = set()
    for position, tool in enumerate(use.tools):
        where = f"tools[{position}]"
        if not _TOOL_NAME.fullmatch(tool.name):
            raise TurnRequestError(
                f"{where}: the function name {tool.name[:80]!r} must be 1 to 64 letters, "
                "digits, underscores, dots or dashes",
                param=f"{where}.function.name",
            )
        if tool.name in names:
            raise TurnRequestError(
                f"{where}: two tools are named {tool.name!r}", param=f"{where}.function.name"
            )
        names.add(tool.name)
        _check_parameters(tool.parameters, f"{where}.function.parameters")
    choice = use.choice
    if choice.mode in ("required", "function") and not use.tools:
        raise TurnRequestError(
            f"tool_choice {choice.name or choice.mode!r} needs tools, and none were given",
            param="tool_choice",
        )
    if choice.mode == "function" and choice.name not in names:
        known = ", ".join(sorted(names))
        raise TurnRequestError(
            f"tool_choice names the function {choice.name!r}, which is not among the tools "
            f"({known})",
            param="tool_choice",
        )


def _check_parameters(parameters: object, param: str) -> None:
    if not isinstance(parameters, dict):
        raise TurnRequestError(f"{param} must be a JSON Schema object", param=param)
    kind = parameters.get("type", "object")
    if kind != "object":
        raise TurnRequestError(
            f"{param}: a function's parameters are an object schema, not type {kind!r}",
            param=param,
        )
    try:
        json_schema_grammar(parameters)
    except EngineError as exc:
        raise TurnRequestError(f"{param}: {exc}", param=param) from None


def check_history(messages: Sequence[ChatMessage]) -> None:
    """Refuse calls whose arguments are not objects, and results that answer no call."""
    called: set[str] = set()
    for position, message in enumerate(messages):
        for call in message.tool_calls:
            if not isinstance(_json_object(call.arguments), dict):
                raise TurnRequestError(
                    f"messages[{position}]: the arguments of the call to {call.name!r} are "
                    "not a JSON object",
                    param=f"messages[{position}].tool_calls",
                )
            called.add(call.id)
        answered = message.tool_call_id
        if message.role == "tool" and answered is not None and answered not in called:
            raise TurnRequestError(
                f"messages[{position}]: tool_call_id {answered!r} answers no call of an "
                "earlier assistant message",
                param=f"messages[{position}].tool_call_id",
            )


def _json_object(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class TurnPlan:
    """What one model is given for one turn, and how its answer is read."""

    messages: tuple[ChatMessage, ...]
    render: RenderOptions
    params: SamplingParams
    tool_format: ToolFormat | None  # None: no tools offered, no calls parsed
    native_tools: bool  # the template lays tools out itself (else a system prompt does)
    thinking: ThinkingTags
    separate_reasoning: bool
    offered: tuple[ToolSpec, ...] = ()  # the tools a call may name (their schemas type values)

    @property
    def format_label(self) -> str:
        """For a header and the log: which tool format, and whether it is the generic one."""
        if self.tool_format is None:
            return "none"
        name = self.tool_format.name
        return name if self.native_tools or name == "generic" else f"{name} (generic prompt)"


def plan_turn(request: TurnRequest, template: ChatTemplate, model: str = "") -> TurnPlan:
    use = request.tool_use
    if request.reasoning.required and not template_thinks(template.source):
        raise TurnRequestError(f"{model or 'the model'!r} does not support thinking", param="think")
    variables = (
        {} if request.reasoning.think is None else {"enable_thinking": request.reasoning.think}
    )
    fmt = detect_format(template.source) if use.tools else None
    native = fmt is not None and fmt.native and template.renders_tools
    messages = tuple(request.messages)
    if fmt is not None and not native:
        messages = _without_tool_syntax(messages, fmt, template)
    params = request.params
    if fmt is None or not use.active:
        return TurnPlan(
            messages,
            RenderOptions(None, variables),
            params,
            None,
            native,
            thinking_tags_of(template.source),
            request.reasoning.separate,
        )
    offered = use.offered()
    if not native:
        messages = _with_tool_prompt(messages, fmt.system_prompt(offered))
    if use.forced:
        grammar = fmt.grammar(offered, parallel=use.parallel, required=True)
        params = dataclasses.replace(params, grammar=grammar, grammar_triggers=())
    elif params.grammar is None:  # a response_format's grammar stays, and calls are free
        grammar = fmt.grammar(offered, parallel=use.parallel, required=False)
        params = dataclasses.replace(params, grammar=grammar, grammar_triggers=fmt.triggers())
    if not native:
        log.info("the chat template cannot lay out tools: using the %s tool prompt", fmt.name)
    return TurnPlan(
        messages,
        RenderOptions(offered if native else None, variables),
        params,
        fmt,
        native,
        thinking_tags_of(template.source),
        request.reasoning.separate,
        offered,
    )


def answer_parser(plan: TurnPlan, prepared: PreparedPrompt) -> AnswerParser:
    """A parser for one answer to `prepared`, the prompt `plan` made."""
    splitter = None
    if plan.separate_reasoning:
        splitter = ReasoningSplitter(
            plan.thinking, starts_inside=opens_thinking(prepared.prompt_tail, plan.thinking)
        )
    offered = plan.offered
    tool_parser = plan.tool_format.parser(offered) if plan.tool_format is not None else None
    return AnswerParser(splitter=splitter, tool_parser=tool_parser)


def _with_tool_prompt(messages: tuple[ChatMessage, ...], prompt: str) -> tuple[ChatMessage, ...]:
    """The tools' description joins the (first) system message, or becomes one."""
    if messages and messages[0].role == "system":
        first = dataclasses.replace(messages[0], content=f"{messages[0].content}\n\n{prompt}")
        return (first, *messages[1:])
    return (ChatMessage("system", prompt), *messages)


def _without_tool_syntax(
    messages: tuple[ChatMessage, ...], fmt: ToolFormat, template: ChatTemplate
) -> tuple[ChatMessage, ...]:
    """A history for a template that knows no tools: calls written out in the format's own
    text, and results as tool messages where the template has that role, else as user
    messages that say whose result they are."""
    tool_role = "'tool'" in template.source or '"tool"' in template.source
    converted: list[ChatMessage] = []
    for message in messages:
        if message.tool_calls:
            text = fmt.call_text(message.tool_calls)
            content = f"{message.content}\n{text}" if message.content else text
            converted.append(ChatMessage("assistant", content))
        elif message.role == "tool" and not tool_role:
            label = message.name or "the tool"
            converted.append(ChatMessage("user", f"Result of {label}:\n{message.content}"))
        else:
            converted.append(message)
    return tuple(converted)
