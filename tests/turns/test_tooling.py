"""Which tools, prompt, grammar and thinking switch a turn gets, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoshikage.engine import ChatMessage, SamplingParams, ToolCall, ToolSpec
from hoshikage.engine.templates import CHATML_TEMPLATE, ChatTemplate
from hoshikage.turns.tooling import check_history, check_request, plan_turn
from hoshikage.turns.vocabulary import (
    ReasoningOptions,
    ToolChoice,
    ToolUse,
    TurnRequest,
    TurnRequestError,
)

TEMPLATES = Path(__file__).parents[1] / "toolformats" / "templates"
OBJECT = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = ToolSpec("get_weather", "The weather", OBJECT)
TIME = ToolSpec("get_time", "The time", {"type": "object"})
QUESTION = [ChatMessage("user", "Weather?")]


def request(use: ToolUse, **fields: object) -> TurnRequest:
    return TurnRequest("m", QUESTION, SamplingParams(), tool_use=use, **fields)  # type: ignore[arg-type]


def qwen() -> ChatTemplate:
    return ChatTemplate((TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text("utf-8"))


def test_auto_is_a_lazy_grammar_at_the_formats_marker() -> None:
    plan = plan_turn(request(ToolUse((WEATHER, TIME))), qwen())
    assert plan.format_label == "hermes" and plan.native_tools
    assert plan.params.grammar and plan.params.grammar_triggers == ("<tool_call>",)
    assert plan.render.tools == (WEATHER, TIME)


def test_a_named_function_is_forced_and_the_only_one_offered() -> None:
    plan = plan_turn(request(ToolUse((WEATHER, TIME), ToolChoice.function("get_time"))), qwen())
    assert plan.params.grammar_triggers == ()  # from the first token
    assert plan.params.grammar is not None and "get_time" in plan.params.grammar
    assert "get_weather" not in plan.params.grammar
    assert plan.offered == (TIME,)


def test_none_offers_nothing_and_reads_no_calls() -> None:
    plan = plan_turn(request(ToolUse((WEATHER,), ToolChoice("none"))), qwen())
    assert plan.tool_format is None and plan.params.grammar is None
    assert plan.render.tools is None


def test_a_template_without_tools_gets_the_tool_prompt() -> None:
    plan = plan_turn(
        request(ToolUse((WEATHER,), ToolChoice("required"))), ChatTemplate(CHATML_TEMPLATE)
    )
    assert plan.format_label == "generic" and not plan.native_tools
    assert plan.messages[0].role == "system" and "get_weather" in plan.messages[0].content
    assert plan.render.tools is None


def test_a_response_format_grammar_stays_under_auto() -> None:
    params = SamplingParams(grammar='root ::= "{}"')
    plan = plan_turn(TurnRequest("m", QUESTION, params, ToolUse((WEATHER,))), qwen())
    assert plan.params.grammar == 'root ::= "{}"' and plan.params.grammar_triggers == ()


def test_thinking_switch_and_its_requirement() -> None:
    qwen3 = ChatTemplate((TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text("utf-8"))
    plan = plan_turn(request(ToolUse(), reasoning=ReasoningOptions(think=False)), qwen3)
    assert plan.render.variables == {"enable_thinking": False}
    with pytest.raises(TurnRequestError, match="does not support thinking"):
        plan_turn(request(ToolUse(), reasoning=ReasoningOptions(True, required=True)), qwen())


@pytest.mark.parametrize(
    ("use", "param"),
    [
        (ToolUse((ToolSpec("a b", "", {"type": "object"}),)), "tools[0].function.name"),
        (ToolUse((WEATHER, WEATHER)), "tools[1].function.name"),
        (ToolUse((ToolSpec("f", "", {"type": "array"}),)), "tools[0].function.parameters"),
        (ToolUse((), ToolChoice("required")), "tool_choice"),
        (ToolUse((WEATHER,), ToolChoice.function("nope")), "tool_choice"),
    ],
)
def test_refused_with_the_field_named(use: ToolUse, param: str) -> None:
    with pytest.raises(TurnRequestError) as refused:
        check_request(request(use))
    assert refused.value.param == param


def test_histories_whose_results_answer_no_call_are_refused() -> None:
    call = ToolCall("c1", "get_weather", '{"city": "Paris"}')
    good = [*QUESTION, ChatMessage("assistant", "", tool_calls=(call,))]
    check_history([*good, ChatMessage("tool", "21", tool_call_id="c1")])
    with pytest.raises(TurnRequestError, match="answers no call"):
        check_history([*good, ChatMessage("tool", "21", tool_call_id="c2")])
    bad = ToolCall("c1", "get_weather", "[1, 2]")
    with pytest.raises(TurnRequestError, match="not a JSON object"):
        check_history([*QUESTION, ChatMessage("assistant", "", tool_calls=(bad,))])
