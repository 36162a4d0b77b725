"""Constrained output: GBNF grammars for JSON, and JSON Schema turned into GBNF."""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp import llama_grammar

from hoshikage.engine.types import EngineError

# Any JSON value whose top level is an object, as OpenAI's json_object mode promises.
JSON_OBJECT_GBNF: str = llama_grammar.JSON_GBNF


# A grammar is matched against every candidate token at every step, on the thread that all
# of a model's requests share: a schema of 50,000 enum values made each token take seconds.
MAX_SCHEMA_VALUES = 2000  # keys, items and values in the schema, counted together
MAX_SCHEMA_DEPTH = 32


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF that accepts exactly the JSON documents valid under `schema`."""
    _check_schema_size(schema)
    try:
        return str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except RecursionError:
        raise EngineError("unsupported JSON schema: nested too deeply") from None
    except Exception as exc:  # the converter raises bare Exceptions and ValueErrors
        raise EngineError(f"unsupported JSON schema: {exc}") from exc


def _check_schema_size(schema: dict[str, Any]) -> None:
    """Refuse schemas too big or deep to match quickly; iterative, so depth cannot hurt."""
    pending: list[tuple[Any, int]] = [(schema, 0)]
    count = 0
    while pending:
        value, depth = pending.pop()
        count += 1
        if count > MAX_SCHEMA_VALUES:
            raise EngineError(
                f"the JSON schema is too large: more than {MAX_SCHEMA_VALUES} keys and values"
            )
        if depth > MAX_SCHEMA_DEPTH:
            raise EngineError(f"the JSON schema nests more than {MAX_SCHEMA_DEPTH} levels deep")
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for item in value.values())
            count += len(value)
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)


# GBNF tokens, for renaming rules: literals and character classes hold no rule names.
_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[^}]*\}|[a-zA-Z0-9-]+|.', re.S)


def json_schema_rules(schema: dict[str, Any], prefix: str) -> tuple[str, str]:
    """GBNF rules accepting exactly the JSON documents valid under `schema`, every rule's
    name starting with `prefix` so that several schemas' rules can share one grammar: the
    name of the rule for the whole document, and the rules (no `root`)."""
    if not re.fullmatch(r"[a-zA-Z0-9-]+", prefix):
        raise ValueError(f"a GBNF rule prefix is letters, digits and '-': {prefix!r}")
    rules = json_schema_grammar(schema)
    names = {line.split(" ::= ", 1)[0] for line in rules.splitlines() if " ::= " in line}

    def rename(match: re.Match[str]) -> str:
        token = match.group(0)
        return prefix + token if token in names else token

    renamed = "\n".join(
        _GBNF_TOKEN.sub(rename, name) + " ::= " + _GBNF_TOKEN.sub(rename, body)
        for name, body in (line.split(" ::= ", 1) for line in rules.splitlines() if line)
    )
    return prefix + "root", renamed
