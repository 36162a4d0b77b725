"""Following one JSON value through a stream of text, to know where it ends.

A tool call's arguments arrive a few characters at a time; the parser passes them on as they
come, so it must know, without waiting for the end, whether the value is still open and what
to append to close it if the answer stops short. The text passed on is strict JSON: raw
control characters inside strings (models write raw newlines) are escaped on the way, and
separators are held back until what follows them arrives, so that a value cut off anywhere
can be closed by appending text alone.
"""

from __future__ import annotations

import re

_LITERALS = ("true", "false", "null")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_WHITESPACE = frozenset(" \t\n\r")
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}

# What the scanner expects next.
_VALUE = "value"  # a value (after ':' or ',' in an array, or at the top)
_FIRST_KEY = "first-key"  # a key or '}' (just after '{')
_KEY = "key"  # a key (after ',' in an object)
_COLON = "colon"
_FIRST_ITEM = "first-item"  # a value or ']' (just after '[')
_AFTER = "after"  # ',' or a closing bracket (after a value)
_STRING = "string"
_NUMBER_STATE = "number"
_LITERAL = "literal"


class JsonScanner:
    """Consumes the text of one JSON value, stopping where it ends."""

    def __init__(self, *, object_only: bool = False) -> None:
        self._object_only = object_only  # the value must be an object (tool arguments)
        self._closers: list[str] = []  # the brackets still to close, innermost last
        self._state = _VALUE
        self._token = ""  # a number or literal being read, or a string escape
        self._in_key = False  # the string being read is an object key
        self._pending = ""  # separators and keys not yet passed on (see module docstring)
        self.started = False  # the value's first character has been seen
        self.done = False
        self.failed = False

    def feed(self, text: str) -> tuple[int, str]:
        """Consume `text` up to the value's end (or a character that cannot belong to it,
        which sets `failed`): how many characters were consumed, and the JSON text they
        decided."""
        out: list[str] = []
        index = 0
        while index < len(text) and not self.done and not self.failed:
            if self._step(text[index], out):
                index += 1
        return index, "".join(out)

    def end(self) -> str:
        """The input has ended (or the value was abandoned at a character that cannot belong
        to it): the text that completes what was passed on into valid JSON ("" if nothing
        was), and the scanner is done."""
        if not self.started:
            self.done = True
            return ""
        out: list[str] = []
        if self._state == _NUMBER_STATE:
            match = _NUMBER.match(self._token)
            out.append(match.group(0) if match and match.group(0) else "0")
        elif self._state == _LITERAL:
            words = [word for word in _LITERALS if word.startswith(self._token)]
            out.append(words[0] if words else "null")
        elif self._state == _STRING and not self._in_key:
            out.append('"')
        # Anything else pending (a key, a comma) is dropped: what was passed on is whole.
        out.extend(reversed(self._closers))
        self.done = True
        return "".join(out)

    # --- one character ------------------------------------------------------------------
    def _step(self, char: str, out: list[str]) -> bool:
        """Handle one character; False when it was not consumed (it ended a number)."""
        state = self._state
        if state == _STRING:
            self._string_char(char, out)
            return True
        if state == _NUMBER_STATE:
            if char in _NUMBER_CHARS:
                self._token += char
                return True
            if not _NUMBER.fullmatch(self._token):
                self.failed = True
                return False
            out.append(self._token)
            self._token = ""
            self._after_value()
            return False  # the character that ended the number is read again
        if state == _LITERAL:
            self._token += char
            if not any(word.startswith(self._token) for word in _LITERALS):
                self.failed = True
                return False
            if self._token in _LITERALS:
                out.append(self._token)
                self._token = ""
                self._after_value()
            return True
        if char in _WHITESPACE:
            if self.started:
                self._pending += char
            return True
        return self._structural(char, out)

    def _structural(self, char: str, out: list[str]) -> bool:
        state = self._state
        if state in (_VALUE, _FIRST_ITEM):
            if state == _FIRST_ITEM and char == "]":
                return self._close(char, out)
            return self._begin_value(char, out)
        if state in (_FIRST_KEY, _KEY):
            if state == _FIRST_KEY and char == "}":
                return self._close(char, out)
            if char != '"':
                self.failed = True
                return False
            self._pending += char
            self._state, self._in_key = _STRING, True
            return True
        if state == _COLON:
            if char != ":":
                self.failed = True
                return False
            self._pending += char
            self._state = _VALUE
            return True
        # _AFTER
        if char == ",":
            self._pending += char
            self._state = _KEY if self._closers[-1] == "}" else _VALUE
            return True
        return self._close(char, out)

    def _begin_value(self, char: str, out: list[str]) -> bool:
        if self._object_only and not self.started and char != "{":
            self.failed = True
            return False
        if char in "{[":
            self._emit(char, out)
            self._closers.append("}" if char == "{" else "]")
            self._state = _FIRST_KEY if char == "{" else _FIRST_ITEM
        elif char == '"':
            self._emit(char, out)
            self._state, self._in_key = _STRING, False
        elif char == "-" or char.isdigit():
            self._emit("", out)
            self._state, self._token = _NUMBER_STATE, char
        elif char in "tfn":
            self._emit("", out)
            self._state, self._token = _LITERAL, char
        else:
            self.failed = True
            return False
        return True

    def _close(self, char: str, out: list[str]) -> bool:
        if not self._closers or char != self._closers[-1]:
            self.failed = True
            return False
        self._closers.pop()
        self._emit(char, out)
        self._after_value()
        return True

    def _emit(self, text: str, out: list[str]) -> None:
        """Pass on what was pending (the value goes on) and then `text`."""
        self.started = True
        if self._pending:
            out.append(self._pending)
            self._pending = ""
        if text:
            out.append(text)

    def _after_value(self) -> None:
        if self._closers:
            self._state = _AFTER
        else:
            self.done = True

    def _string_char(self, char: str, out: list[str]) -> None:
        # A key is held back with its colon until its value begins; a value's text is
        # passed on as it comes, except an escape sequence, until it is complete.
        target = None if self._in_key else out
        if self._token:
            self._escape_char(char, target)
            return
        if char == "\\":
            self._token = char
        elif char == '"':
            self._put(char, target)
            if self._in_key:
                self._state = _COLON
            else:
                self._after_value()
        elif ord(char) < 0x20:
            self._put(_CONTROL_ESCAPES.get(char, f"\\u{ord(char):04x}"), target)
        else:
            self._put(char, target)

    def _escape_char(self, char: str, target: list[str] | None) -> None:
        token = self._token + char
        if len(token) == 2 and char in _SIMPLE_ESCAPES:
            self._token = ""
            self._put(token, target)
        elif (len(token) == 2 and char == "u") or (2 < len(token) < 6 and char in _HEX):
            self._token = token
        elif len(token) == 6 and char in _HEX:
            self._token = ""
            self._put(token, target)
        else:
            # Not an escape JSON knows: the backslash was meant literally.
            self._token = ""
            self._put("\\\\" + token[1:-1], target)
            self._string_char(char, target if target is not None else [])

    def _put(self, text: str, target: list[str] | None) -> None:
        if target is None:
            self._pending += text
        else:
            target.append(text)
