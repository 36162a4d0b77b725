"""Chat templates: render a GGUF's own Jinja template, or a built-in one when it has none."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hoshikage.engine.types import ChatMessage, EngineError, ToolSpec

# The conversation as one running text: what a base (non-chat) model continues best.
# A user message followed by the model's answer is joined without a break, since the
# answer continued that text; other turns start on a new line.
# Newlines are written as expressions: whitespace control ("-") and trim_blocks would
# otherwise eat a literal newline next to a tag.
PLAIN_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}{{ m.content }}{{ '\\n\\n' }}"
    "{%- else -%}{{ m.content }}"
    "{%- if not loop.last and loop.nextitem.role != 'assistant' -%}{{ '\\n' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

TRANSCRIPT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{{ m.role | capitalize }}: {{ m.content }}{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)

CHATML_TEMPLATE = (
    "{%- for m in messages -%}"
    "<|im_start|>{{ m.role }}{{ '\\n' }}{{ m.content }}<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "plain": PLAIN_TEMPLATE,
    "transcript": TRANSCRIPT_TEMPLATE,
    "chatml": CHATML_TEMPLATE,
}
FALLBACK_TEMPLATE_NAME = "plain"


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template and the special tokens it may refer to."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        origin: str = "gguf",
        is_fallback: bool = False,
    ) -> None:
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader()
        )
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        try:
            self._template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise EngineError(f"chat template ({origin}) does not compile: {exc}") from exc
        self.source = source
        # Mistral's templates refuse call ids that are not 9 letters and digits.
        self._nine_char_ids = "length 9" in source
        self.origin = origin
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.is_fallback = is_fallback

    @classmethod
    def resolve(
        cls, override: str | None, gguf_template: str | None, *, bos_token: str, eos_token: str
    ) -> ChatTemplate:
        """The override (a built-in name or Jinja text), else the GGUF's, else the fallback."""
        tokens: dict[str, Any] = {"bos_token": bos_token, "eos_token": eos_token}
        if override:
            if override in BUILTIN_TEMPLATES:
                return cls(BUILTIN_TEMPLATES[override], origin=f"built-in:{override}", **tokens)
            return cls(override, origin="settings", **tokens)
        if gguf_template:
            return cls(gguf_template, origin="gguf", **tokens)
        return cls(
            BUILTIN_TEMPLATES[FALLBACK_TEMPLATE_NAME],
            origin=f"built-in:{FALLBACK_TEMPLATE_NAME}",
            is_fallback=True,
            **tokens,
        )

    @property
    def renders_tools(self) -> bool:
        """Whether the template itself lays out `tools` (else they go in a system prompt)."""
        return "tools" in self.source

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[ToolSpec] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt, with Hugging Face's conventions for what templates are given: tools as
        `{"type": "function", "function": {...}}`, an assistant's calls as `tool_calls` with
        arguments as objects, tool results with `tool_call_id` and `name`, thinking as
        `reasoning_content`; `variables` are extra switches such as `enable_thinking`."""
        try:
            return self._template.render(
                **dict(variables or {}),
                messages=[template_message(m, self._nine_char_ids) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=[template_tool(tool) for tool in tools] if tools else None,
            )
        except jinja2.TemplateError as exc:
            raise EngineError(
                f"the model's chat template rejected the conversation: {exc}"
            ) from exc


def template_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def template_message(message: ChatMessage, nine_char_ids: bool = False) -> dict[str, Any]:
    def call_id(value: str) -> str:
        return nine_chars(value) if nine_char_ids else value

    rendered: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        rendered["tool_calls"] = [
            {
                "id": call_id(call.id),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_object()},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        rendered["tool_call_id"] = call_id(message.tool_call_id)
    if message.name is not None:
        rendered["name"] = message.name
    if message.reasoning:
        rendered["reasoning_content"] = message.reasoning
    return rendered


_ALPHANUMERIC = string.ascii_letters + string.digits


def nine_chars(call_id: str) -> str:
    """A call id as Mistral's templates take it (9 letters and digits), the same for a call
    and the result that answers it."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode("utf-8")).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALPHANUMERIC))
        digits.append(_ALPHANUMERIC[digit])
    return "".join(digits)
