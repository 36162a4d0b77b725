"""Following a JSON value through streamed text: where it ends, and how to close it."""

from __future__ import annotations

import json

import pytest

from hoshikage.toolformats.jsonscan import JsonScanner

DOCUMENT = (
    '{"a": 1, "b": [true, false, null, -1.5e3, 0, "x\\"y\\u00e9\\\\"], '
    '"c": {"d": {}, "e": []}, "f": "\\n"}'
)


def scan(text: str, *, object_only: bool = False) -> tuple[int, str, JsonScanner]:
    scanner = JsonScanner(object_only=object_only)
    count, out = scanner.feed(text)
    return count, out, scanner


def test_a_value_ends_where_it_ends() -> None:
    count, out, scanner = scan(DOCUMENT + ' and then "text"')
    assert scanner.done and count == len(DOCUMENT)
    assert json.loads(out) == json.loads(DOCUMENT)


@pytest.mark.parametrize("text", ['"str"x', "[1, 2]x", "truex", "{}x"])
def test_top_level_values_of_every_kind(text: str) -> None:
    count, out, scanner = scan(text)
    assert scanner.done and out == text[:-1] and count == len(text) - 1


def test_a_number_ends_only_when_something_follows() -> None:
    _, out, scanner = scan("12")
    assert not scanner.done and out == ""
    assert scanner.end() == "12"


def test_output_is_strict_json() -> None:
    # Raw control characters escaped, unknown escapes taken as a literal backslash.
    _, out, scanner = scan('{"s": "line\nnext\ttab", "w": "C:\\dir"}')
    assert scanner.done
    assert json.loads(out) == {"s": "line\nnext\ttab", "w": "C:\\dir"}


def test_fed_any_way_the_output_is_the_same() -> None:
    whole = scan(DOCUMENT)[1]
    scanner = JsonScanner()
    parts = []
    for char in DOCUMENT:
        count, out = scanner.feed(char)
        assert count == 1
        parts.append(out)
    assert "".join(parts) == whole


def test_cut_anywhere_it_closes_into_valid_json() -> None:
    for cut in range(1, len(DOCUMENT)):
        _, out, scanner = scan(DOCUMENT[:cut], object_only=True)
        closed = out + scanner.end()
        assert isinstance(json.loads(closed), dict), (DOCUMENT[:cut], closed)


@pytest.mark.parametrize(
    ("text", "failed_at"),
    [("{'a': 1}", 1), ('{"a" 1}', 5), ("[1,]", 3), ('{"a": tru e}', 9), ("[1 2]", 3), ("+1", 0)],
)
def test_what_is_not_json_stops_it(text: str, failed_at: int) -> None:
    count, out, scanner = scan(text)
    assert scanner.failed and count == failed_at
    if out:  # what was passed on still closes into JSON
        json.loads(out + scanner.end())


def test_object_only_refuses_other_values() -> None:
    count, _, scanner = scan("[1]", object_only=True)
    assert scanner.failed and count == 0
