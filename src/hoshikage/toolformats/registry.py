"""Which tool-call format a model uses, read from its chat template (as llama.cpp's
common/chat.cpp does: by the markers the template writes), or named."""

from __future__ import annotations

import dataclasses
import re

from hoshikage.toolformats.base import ToolFormat
from hoshikage.toolformats.deepseek import CALL_BEGIN, CALLS_BEGIN_VARIANTS, DeepSeekFormat
from hoshikage.toolformats.generic import GenericFormat
from hoshikage.toolformats.hermes import HermesFormat
from hoshikage.toolformats.llama3 import Llama3JsonFormat
from hoshikage.toolformats.mistral import MistralFormat
from hoshikage.toolformats.pythonic import PythonicFormat
from hoshikage.toolformats.qwen3_coder import Qwen3CoderFormat

_Format = (
    HermesFormat
    | Llama3JsonFormat
    | PythonicFormat
    | MistralFormat
    | Qwen3CoderFormat
    | DeepSeekFormat
    | GenericFormat
)
_FORMATS: dict[str, _Format] = {
    "hermes": HermesFormat(),
    "llama3_json": Llama3JsonFormat(),
    "pythonic": PythonicFormat(),
    "mistral": MistralFormat(),
    "mistral_v11": MistralFormat(v11=True),
    "qwen3_coder": Qwen3CoderFormat(),
    "deepseek_r1": DeepSeekFormat(),
    "deepseek_v3_1": DeepSeekFormat(v3_1=True),
    "generic": GenericFormat(),
}
FORMAT_NAMES: tuple[str, ...] = tuple(_FORMATS)

_JINJA_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_TOOLS_VARIABLE = re.compile(r"\btools\b")
_PYTHONIC_EXAMPLE = re.compile(r"\[\s*func_name1\(")


def renders_tools(template_source: str) -> bool:
    """The template's code uses the `tools` variable (its text merely naming tools does not
    count)."""
    return any(_TOOLS_VARIABLE.search(code) for code in _JINJA_CODE.findall(template_source))


def detect_format(template_source: str | None) -> ToolFormat:
    """The format a chat template's model calls tools in; `native` says whether the
    template renders the tools itself. A template with no markers known here gets the
    generic format (native when the template renders tools in its own way)."""
    if not template_source:
        return GenericFormat()
    source = template_source
    native = renders_tools(source)
    if any(marker in source for marker in (*CALLS_BEGIN_VARIANTS, CALL_BEGIN)):
        # R1 and V3 fence the arguments as JSON; V3.1 writes them bare after the separator.
        found: _Format = DeepSeekFormat(v3_1="```json" not in source)
    elif "<function=" in source and "<parameter=" in source:
        found = Qwen3CoderFormat()
    elif "<tool_call>" in source and "<arg_key>" not in source:  # GLM's tags hold no JSON
        found = HermesFormat()
    elif "[TOOL_CALLS]" in source:
        found = MistralFormat(v11="[ARGS]" in source)
    elif _PYTHONIC_EXAMPLE.search(source) or "<|python_start|>" in source:
        found = PythonicFormat()
    elif "ipython" in source and ('"parameters"' in source or "<|python_tag|>" in source):
        found = Llama3JsonFormat()
    else:
        return GenericFormat(native=native)
    return found if native else dataclasses.replace(found, native=False)


def format_named(name: str, *, native: bool | None = None) -> ToolFormat:
    """A format by its name (see FORMAT_NAMES); `native` defaults to True but for the
    generic format."""
    try:
        found = _FORMATS[name]
    except KeyError:
        known = ", ".join(FORMAT_NAMES)
        raise ValueError(f"unknown tool-call format {name!r} (known: {known})") from None
    if native is None or native == found.native:
        return found
    return dataclasses.replace(found, native=native)
