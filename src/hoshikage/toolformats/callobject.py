"""Reading one call written as a JSON object, `{"name": "f", "arguments": {...}}`, as it
arrives: the shape Hermes, Qwen, Llama 3, Mistral and the generic format share.

The call begins (CallBegin) once its name is known and its arguments object has started;
from then on the arguments pass on as they come. Until then nothing is decided, so a failed
read loses nothing: the format's parser returns the text as text. Llama writes
"parameters" for "arguments"; some models write the arguments as a JSON string, or nest
the call as OpenAI does (`{"type": "function", "function": {...}}`): all are accepted, and
other keys ("id", "type") are skipped.
"""

from __future__ import annotations

import json
from typing import Any

from hoshikage.toolformats.base import CallArguments, CallBegin, CallEnd, Piece
from hoshikage.toolformats.jsonscan import JsonScanner
from hoshikage.toolformats.stream import WHITESPACE

NAME_KEY = "name"
ARGUMENT_KEYS = ("arguments", "parameters")
NESTED_KEY = "function"

# What the reader expects next, outside the values it hands to a JsonScanner.
_OPEN = "open"
_FIRST_KEY = "first-key"
_KEY = "key"
_COLON = "colon"
_VALUE = "value"
_AFTER = "after"
_SCANNING = "scanning"  # inside a key or a value
_NESTED = "nested"  # inside an OpenAI-style "function" object


class CallObjectReader:
    """Consumes the text of one call object, stopping after its closing brace."""

    def __init__(self, *, require_arguments: bool = False) -> None:
        # A bare object is only a call when it has arguments ({"name": "Bob"} is data).
        self._require_arguments = require_arguments
        self._state = _OPEN
        self._scanner: JsonScanner | None = None
        self._scanned: list[str] = []  # the text of the key or value being scanned
        self._role = ""  # what the value being scanned is: "key", "name", "args", "other"
        self._key = ""
        self._nested: CallObjectReader | None = None
        self.name: str | None = None
        self._arguments: str | None = None  # complete arguments, before the call began
        self._streaming = False  # the arguments are passing on as they arrive
        self._arguments_seen = False
        self.committed = False  # CallBegin was sent: the call can no longer become text
        self.done = False
        self.failed = False

    def feed(self, text: str) -> tuple[int, list[Piece]]:
        """Consume `text` up to the end of the object (or a character that cannot belong
        to it, which sets `failed`): how many characters were consumed, and the pieces."""
        pieces: list[Piece] = []
        index = 0
        while index < len(text) and not self.done and not self.failed:
            if self._state == _SCANNING:
                index += self._scan(text[index:], pieces)
            elif self._state == _NESTED:
                index += self._feed_nested(text[index:], pieces)
            elif text[index] in WHITESPACE or self._structural(text[index], pieces):
                index += 1
        return index, pieces

    def end(self) -> list[Piece] | None:
        """The input ended inside the object: the pieces that close the call, or None when
        there is no call to close (it never began and cannot be completed)."""
        if self._nested is not None:
            return self._nested.end()
        if self.committed:
            closing = self._scanner.end() if self._streaming and self._scanner else ""
            return [CallArguments(closing), CallEnd()]
        if self.name is not None and self._arguments is not None:
            return [CallBegin(self.name), CallArguments(self._arguments), CallEnd()]
        return None

    # --- structure ----------------------------------------------------------------------
    def _structural(self, char: str, pieces: list[Piece]) -> bool:
        state = self._state
        if state == _OPEN:
            return self._expect(char == "{", _FIRST_KEY)
        if state in (_FIRST_KEY, _KEY):
            if state == _FIRST_KEY and char == "}":
                return self._close_object(pieces)
            if char != '"':
                return self._fail()
            self._begin_scan("key", JsonScanner())
            return False  # the quote is the key scanner's first character
        if state == _COLON:
            return self._expect(char == ":", _VALUE)
        if state == _VALUE:
            self._begin_value(char, pieces)
            return False  # the character is the value's first: its reader reads it
        # _AFTER
        if char == ",":
            self._state = _KEY
            return True
        if char == "}":
            return self._close_object(pieces)
        return self._fail()

    def _expect(self, ok: bool, then: str) -> bool:
        if not ok:
            return self._fail()
        self._state = then
        return True

    def _fail(self) -> bool:
        self.failed = True
        return False

    def _begin_value(self, char: str, pieces: list[Piece]) -> None:
        key = self._key
        named = key == NAME_KEY or (key == NESTED_KEY and char == '"')
        if named and self.name is None:
            self._begin_scan("name", JsonScanner())
        elif key in ARGUMENT_KEYS and not self._arguments_seen:
            self._arguments_seen = True
            if char == "{":
                self._begin_scan("args", JsonScanner(object_only=True))
                if self.name is not None:
                    self._commit(pieces)
                    self._streaming = True
            elif char == '"':
                self._begin_scan("args-string", JsonScanner())
            else:
                self._fail()
        elif key == NESTED_KEY and char == "{" and self.name is None and not self._arguments_seen:
            self._nested = CallObjectReader(require_arguments=self._require_arguments)
            self._state = _NESTED
        else:
            self._begin_scan("other", JsonScanner())

    def _begin_scan(self, role: str, scanner: JsonScanner) -> None:
        self._role, self._scanner, self._scanned = role, scanner, []
        self._state = _SCANNING

    def _scan(self, text: str, pieces: list[Piece]) -> int:
        scanner = self._scanner
        assert scanner is not None
        count, out = scanner.feed(text)
        if self._streaming:
            pieces.append(CallArguments(out))
        else:
            self._scanned.append(out)
        if scanner.failed:
            self._fail()
        elif scanner.done:
            self._end_value(pieces)
        return count

    def _end_value(self, pieces: list[Piece]) -> None:
        role, text = self._role, "".join(self._scanned)
        self._state = _AFTER
        if role == "key":
            self._key = json.loads(text)
            self._state = _COLON
        elif role == "name":
            name = json.loads(text)
            if not isinstance(name, str) or not name.strip():
                self._fail()
                return
            self.name = name.strip()
            if self._arguments is not None:
                self._commit(pieces)
        elif role == "args":
            if self._streaming:
                self._streaming = False
            else:
                self._arguments = text
        elif role == "args-string":
            arguments = _decode_string_arguments(text)
            if arguments is None:
                self._fail()
                return
            self._arguments = arguments
            if self.name is not None:
                self._commit(pieces)

    def _feed_nested(self, text: str, pieces: list[Piece]) -> int:
        nested = self._nested
        assert nested is not None
        count, out = nested.feed(text)
        pieces += out
        self.committed = nested.committed
        if nested.failed:
            self._fail()
        elif nested.done:
            self._state = _AFTER
        return count

    def _commit(self, pieces: list[Piece]) -> None:
        assert self.name is not None
        pieces.append(CallBegin(self.name))
        self.committed = True
        if self._arguments is not None:
            pieces.append(CallArguments(self._arguments))

    def _close_object(self, pieces: list[Piece]) -> bool:
        if self._nested is not None:
            self.done = True  # the nested object made the call
            return True
        if self.name is None:
            return self._fail()
        if not self.committed:
            if self._arguments is None:
                if self._require_arguments or self._arguments_seen:
                    return self._fail()
                self._arguments = "{}"
            self._commit(pieces)
        pieces.append(CallEnd())
        self.done = True
        return True


def _decode_string_arguments(text: str) -> str | None:
    """Arguments written as a JSON string of a JSON object: that object's text."""
    try:
        value: Any = json.loads(json.loads(text))
    except (ValueError, TypeError):
        return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)
