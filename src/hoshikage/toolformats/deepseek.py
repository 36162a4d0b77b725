"""DeepSeek V3 and R1 (with their distills), and V3.1: calls between full-width markers.

    R1/V3: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
           ```json
           {"city": "Paris"}
           ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>
    V3.1:  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}
           <｜tool▁call▁end｜><｜tool▁calls▁end｜>   (on one line)

One parser reads both (a head of `function` before the separator is R1's type). R1's
distills misspell the opening marker; llama.cpp's variants of it are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hoshikage.engine.types import ToolCall, ToolSpec
from hoshikage.toolformats.base import TextPiece, ToolCallParser
from hoshikage.toolformats.grammar import GrammarBuilder, alternatives, calls, literal
from hoshikage.toolformats.jsonscan import JsonScanner
from hoshikage.toolformats.prompt import arguments_json, system_prompt
from hoshikage.toolformats.stream import StreamParser, starts, undecided_tail

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_BEGIN_VARIANTS = (
    CALLS_BEGIN,
    "<｜tool_calls_begin｜>",
    "<｜tool calls begin｜>",
    "<｜tool\\_calls\\_begin｜>",
    "<｜tool▁calls｜>",
)
CALL_BEGIN = "<｜tool▁call▁begin｜>"
SEPARATOR = "<｜tool▁sep｜>"
CALL_END = "<｜tool▁call▁end｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
FENCE = "```"
_LONGEST_HEAD = 256

_TEXT = "text"
_CALLS = "calls"  # inside the block: a call, or the block's end
_HEAD = "head"  # a call's head, to the separator
_R1_NAME = "r1-name"  # R1: the name after `function<｜tool▁sep｜>`, to the line's end
_FENCE_OPEN = "fence-open"  # R1: ```json before the arguments
_ARGUMENTS = "arguments"  # before the arguments object
_STREAM = "stream"  # inside the arguments
_CALL_END = "call-end"  # after the arguments: ``` and <｜tool▁call▁end｜>, if written
_AFTER = "after"  # after the block


class DeepSeekParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = _TEXT
        self._raw = ""  # the text since the last call, returned as text if no call follows
        self._in_block = False
        self._name = ""
        self._scanner = JsonScanner()

    def _step(self) -> bool:
        state = self._state
        if state == _TEXT:
            marker = self._text_until((*CALLS_BEGIN_VARIANTS, CALL_BEGIN))
            if marker is None:
                return False
            self._raw = self._consume(len(marker))
            self._in_block = marker != CALL_BEGIN
            self._state = _CALLS if self._in_block else _HEAD
            return True
        if state == _HEAD:
            return self._head()
        if state == _R1_NAME:
            return self._r1_name()
        if state == _STREAM:
            return self._stream()
        self._raw += self._skip_whitespace()
        if not self._buffer:
            return False
        if state == _CALLS:
            return self._calls()
        if state == _FENCE_OPEN:
            for fence in (FENCE + "json", FENCE):
                found = starts(self._buffer, fence, self._final)
                if found == "wait":
                    return False
                if found == "yes":
                    self._raw += self._consume(len(fence))
                    break
            self._state = _ARGUMENTS
            return True
        if state == _ARGUMENTS:
            scanner = self._begin_arguments(self._name)
            if scanner is None:
                return self._no_call()
            self._scanner, self._state = scanner, _STREAM
            return True
        if state == _CALL_END:
            return self._call_end()
        self._state = _TEXT  # _AFTER: whitespace after the block is dropped
        return True

    def _no_call(self) -> bool:
        self._text(self._raw)
        self._raw, self._state = "", _TEXT
        return True

    def _calls(self) -> bool:
        for marker, following in ((CALL_BEGIN, _HEAD), (CALLS_END, _AFTER)):
            found = starts(self._buffer, marker, self._final)
            if found == "wait":
                return False
            if found == "yes":
                self._raw += self._consume(len(marker))
                self._state = following
                return True
        self._state = _HEAD  # a call without its opening marker
        return True

    def _head(self) -> bool:
        end = self._buffer.find(SEPARATOR)
        head = self._buffer if end < 0 else self._buffer[:end]
        if end < 0:  # what may be the separator's beginning is not the head's
            head = head[: len(head) - undecided_tail(head, [SEPARATOR])]
        if len(head) > _LONGEST_HEAD or "\n" in head or "<｜" in head or (end < 0 and self._final):
            return self._no_call()
        if end < 0:
            return False
        self._raw += self._consume(end + len(SEPARATOR))
        if head.strip() == "function":
            self._state = _R1_NAME
        else:
            self._name, self._state = head.strip(), _ARGUMENTS
            if not self._name:
                return self._no_call()
        return True

    def _r1_name(self) -> bool:
        if self._buffer.lstrip().startswith("{"):  # V3.1's form, for a tool named "function"
            self._name, self._state = "function", _ARGUMENTS
            return True
        end = self._buffer.find("\n")
        if end < 0 and not self._final and len(self._buffer) <= _LONGEST_HEAD:
            return False
        name = self._buffer[: end if end >= 0 else len(self._buffer)].strip()
        if not name or "<｜" in name or end < 0:
            return self._no_call()
        self._raw += self._consume(end + 1)
        self._name, self._state = name, _FENCE_OPEN
        return True

    def _stream(self) -> bool:
        result = self._stream_arguments(self._scanner)
        if result == "more":
            return False
        self._raw = ""
        self._state = _CALL_END if result == "done" else _TEXT
        return True

    def _call_end(self) -> bool:
        for marker in (FENCE, CALL_END):
            found = starts(self._buffer, marker, self._final)
            if found == "wait":
                return False
            if found == "yes":
                self._consume(len(marker))
                if marker == CALL_END:
                    self._state = _CALLS if self._in_block else _AFTER
                return True
        self._state = _CALLS if self._in_block else _AFTER
        return True

    def _close(self) -> None:
        if self._state == _STREAM:
            self._end_arguments(self._scanner)
        elif (
            self._state in (_CALLS, _HEAD, _R1_NAME, _FENCE_OPEN, _ARGUMENTS) and self._raw.strip()
        ):
            self._out.append(TextPiece(self._raw))


@dataclass(frozen=True)
class DeepSeekFormat:
    """`v3_1`: V3.1's calls (name, separator, JSON); else R1's (type, name, fenced JSON)."""

    v3_1: bool = False
    native: bool = True

    @property
    def name(self) -> str:
        return "deepseek_v3_1" if self.v3_1 else "deepseek_r1"

    def parser(self, tools: Sequence[ToolSpec]) -> ToolCallParser:
        return DeepSeekParser()

    def triggers(self) -> tuple[str, ...]:
        return tuple(_regex_escape(marker) for marker in CALLS_BEGIN_VARIANTS)

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, required: bool) -> str:
        builder = GrammarBuilder()
        heads = []
        for tool in tools:
            arguments = builder.arguments(tool)
            if self.v3_1:
                heads.append(f"{literal(tool.name + SEPARATOR)} {arguments}")
            else:
                head = literal(f"function{SEPARATOR}{tool.name}\n{FENCE}json\n")
                heads.append(f"{head} {arguments} {literal(chr(10) + FENCE)}")
        call = builder.rule(
            f"{literal(CALL_BEGIN)} {alternatives(heads)} {literal(CALL_END)}", "call"
        )
        begin = alternatives([literal(marker) for marker in CALLS_BEGIN_VARIANTS])
        body = calls(call, parallel=parallel)
        return builder.build(f"ws {begin} {body} {literal(CALLS_END)}")

    def call_text(self, calls: Sequence[ToolCall]) -> str:
        written = []
        for call in calls:
            if self.v3_1:
                body = f"{call.name}{SEPARATOR}{arguments_json(call)}"
            else:
                body = (
                    f"function{SEPARATOR}{call.name}\n{FENCE}json\n{arguments_json(call)}\n{FENCE}"
                )
            written.append(f"{CALL_BEGIN}{body}{CALL_END}")
        return f"{CALLS_BEGIN}{chr(10).join(written)}{CALLS_END}"

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str:
        if self.v3_1:
            call = (
                f"{CALL_BEGIN}<function name>{SEPARATOR}{{<arguments as a JSON object>}}{CALL_END}"
            )
        else:
            call = (
                f"{CALL_BEGIN}function{SEPARATOR}<function name>\n{FENCE}json\n"
                f"{{<arguments as a JSON object>}}\n{FENCE}{CALL_END}"
            )
        return system_prompt(
            tools,
            f"{CALLS_BEGIN}{call}{CALLS_END}\n(for several calls, write several "
            f"{CALL_BEGIN}…{CALL_END} one after another inside {CALLS_BEGIN}…{CALLS_END})",
        )


def _regex_escape(text: str) -> str:
    """A regular expression matching `text` (escaping only what both Python and
    ECMAScript treat as special)."""
    return "".join("\\" + char if char in "\\^$.|?*+()[]{}" else char for char in text)
