"""The parsers' shared helpers: markers in a buffer, and tidy output."""

from __future__ import annotations

from hoshikage.toolformats.base import CallArguments, CallBegin, CallEnd, Piece, TextPiece
from hoshikage.toolformats.stream import first_marker, merge, starts, undecided_tail


def test_first_marker_is_the_earliest_and_longest() -> None:
    assert first_marker("ab<x><xy>", ["<xy>", "<x>"]) == (2, "<x>")
    assert first_marker("<xy>", ["<x", "<xy>"]) == (0, "<xy>")
    assert first_marker("none", ["<x>"]) is None


def test_undecided_tail_is_what_could_begin_a_marker() -> None:
    assert undecided_tail("text <tool", ["<tool_call>"]) == 5
    assert undecided_tail("text <tools", ["<tool_call>"]) == 0
    assert undecided_tail("a [TOOL_CALLS", ["[TOOL_CALLS]", "<x>"]) == 11
    assert undecided_tail("<", ["<x>", "<y>"]) == 1


def test_starts() -> None:
    assert starts("<tool_call>x", "<tool_call>", False) == "yes"
    assert starts("<tool", "<tool_call>", False) == "wait"
    assert starts("<tool", "<tool_call>", True) == "no"
    assert starts("<b>", "<tool_call>", False) == "no"


def test_merge_joins_neighbours_and_drops_empty_pieces() -> None:
    pieces: list[Piece] = [
        TextPiece("a"),
        TextPiece(""),
        TextPiece("b"),
        CallBegin("f"),
        CallArguments("{"),
        CallArguments(""),
        CallArguments("}"),
        CallEnd(),
    ]
    assert merge(pieces) == [TextPiece("ab"), CallBegin("f"), CallArguments("{}"), CallEnd()]
