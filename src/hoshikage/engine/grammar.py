"""Constrained output: GBNF grammars for JSON, and JSON Schema turned into GBNF."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp import llama_grammar

from hoshikage.engine.types import EngineError

# Any JSON value whose top level is an object, as OpenAI's json_object mode promises.
JSON_OBJECT_GBNF: str = llama_grammar.JSON_GBNF


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF that accepts exactly the JSON documents valid under `schema`."""
    try:
        return str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare Exceptions and ValueErrors
        raise EngineError(f"unsupported JSON schema: {exc}") from exc
