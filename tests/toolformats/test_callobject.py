"""Reading a call object as it streams: when it begins, what it passes on, what fails."""

from __future__ import annotations

from hoshikage.toolformats.base import CallArguments, CallBegin, CallEnd, Piece
from hoshikage.toolformats.callobject import CallObjectReader


def read(text: str, **options: bool) -> tuple[int, list[Piece], CallObjectReader]:
    reader = CallObjectReader(**options)
    count, pieces = reader.feed(text)
    return count, pieces, reader


def joined(pieces: list[Piece]) -> str:
    return "".join(piece.text for piece in pieces if isinstance(piece, CallArguments))


def test_the_call_begins_with_its_arguments_and_stops_at_its_brace() -> None:
    text = '{"name": "f", "arguments": {"a": 1}} after'
    count, pieces, reader = read(text)
    assert reader.done and text[count:] == " after"
    assert pieces[0] == CallBegin("f") and pieces[-1] == CallEnd()
    assert joined(pieces) == '{"a": 1}'


def test_nothing_is_decided_before_the_arguments_begin() -> None:
    _, pieces, reader = read('{"name": "f", "argu')
    assert pieces == [] and not reader.committed
    assert reader.end() is None  # no call to close: the caller keeps the text


def test_arguments_before_the_name_wait_for_it() -> None:
    reader = CallObjectReader()
    _, first = reader.feed('{"arguments": {"a": [1, 2]}, ')
    assert first == []
    _, then = reader.feed('"name": "f"}')
    assert then[0] == CallBegin("f") and joined(then) == '{"a": [1, 2]}'


def test_skipped_keys_nested_calls_and_string_arguments() -> None:
    _, pieces, _ = read('{"id": "x", "type": "function", "name": "f", "parameters": {}}')
    assert pieces == [CallBegin("f"), CallArguments("{}"), CallEnd()]
    nested = '{"type": "function", "function": {"name": "g", "arguments": "{\\"q\\": 1}"}}'
    _, pieces, reader = read(nested)
    assert reader.done and pieces == [CallBegin("g"), CallArguments('{"q": 1}'), CallEnd()]


def test_objects_that_are_no_call_fail_without_passing_anything() -> None:
    for text, options in (
        ('{"name": "Ada", "born": 1815}', {"require_arguments": True}),
        ('{"name": 3, "arguments": {}}', {}),
        ('{"name": "f", "arguments": [1]}', {}),
        ('{"name": "f", "arguments": "not json"}', {}),
        ("[1]", {}),
    ):
        _, pieces, reader = read(text, **options)
        assert reader.failed and pieces == [] and not reader.committed, text


def test_an_end_inside_the_arguments_closes_them() -> None:
    _, pieces, reader = read('{"name": "f", "arguments": {"a": "b')
    closing = reader.end()
    assert closing is not None
    assert joined(pieces + closing) == '{"a": "b"}' and closing[-1] == CallEnd()
