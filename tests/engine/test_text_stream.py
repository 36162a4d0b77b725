"""Streaming text safely: stop strings never leak, UTF-8 characters are never split."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hoshikage.engine.text_stream import StopMatcher, Utf8Assembler

# No example database: keep the project tree free of a .hypothesis folder.
PROPERTY = settings(max_examples=200, deadline=None, database=None)


def run(stops: Sequence[str], pieces: Iterable[str]) -> tuple[list[str], str, bool]:
    """Feed the pieces; return what each feed emitted, the flush, and whether it stopped."""
    matcher = StopMatcher(stops)
    emitted = [matcher.feed(piece) for piece in pieces]
    return emitted, matcher.flush(), matcher.stopped


def streamed(stops: Sequence[str], pieces: Iterable[str]) -> str:
    emitted, rest, _ = run(stops, pieces)
    return "".join(emitted) + rest


def up_to_first_stop(text: str, stops: Sequence[str]) -> str:
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return text[: min(found)] if found else text


def split_at(text: str, cuts: Iterable[int]) -> list[str]:
    points = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    return [text[start:end] for start, end in pairwise(points)]


# --- examples ---------------------------------------------------------------------------------


def test_stop_fed_char_by_char_never_leaks_a_prefix() -> None:
    emitted, rest, stopped = run(["</s>"], "Hello</s>ignored")
    assert "".join(emitted) == "Hello"
    assert rest == ""
    assert stopped
    for piece in emitted:
        assert "<" not in piece


def test_held_text_is_released_when_the_stop_does_not_come() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("a <") == "a "
    assert matcher.feed("/") == ""
    assert matcher.feed("b") == "</b"  # not a stop after all
    assert not matcher.stopped


def test_flush_releases_held_text_when_no_stop_came() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("answer #") == "answer "
    assert matcher.feed("#") == ""
    assert matcher.flush() == "##"
    assert not matcher.stopped
    assert matcher.flush() == ""


def test_stop_split_across_chunks() -> None:
    emitted, rest, stopped = run(["User:"], ["Sure.\nUs", "er", ": next"])
    assert emitted == ["Sure.\n", "", ""]
    assert rest == ""
    assert stopped


def test_multiple_stops_pick_the_earliest() -> None:
    assert streamed(["END", "STOP"], ["x STOP y END z"]) == "x "
    assert streamed(["END", "STOP"], list("x STOP y END z")) == "x "
    assert streamed(["STOP", "END"], ["a END b STOP"]) == "a "


def test_nothing_after_a_stop_is_emitted() -> None:
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("one\n\ntwo") == "one"
    assert matcher.stopped
    assert matcher.feed("three") == ""
    assert matcher.flush() == ""


def test_stop_at_the_very_start() -> None:
    emitted, rest, stopped = run(["<|im_end|>"], ["<|im_end|>", "more"])
    assert emitted == ["", ""]
    assert rest == ""
    assert stopped


@pytest.mark.parametrize("stops", [[], [""], ["", ""]])
def test_no_stops_is_a_passthrough(stops: list[str]) -> None:
    matcher = StopMatcher(stops)
    for piece in ["</s>", "<", "###", "", "星影"]:
        assert matcher.feed(piece) == piece
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_repeated_prefix_characters() -> None:
    assert streamed(["aab"], list("aaab")) == "a"
    assert streamed(["aab"], list("aaaa")) == "aaaa"


def test_result_does_not_depend_on_chunking_with_nested_stops() -> None:
    stops = ["\n###\n", "###"]
    text = "hi\n###\nmore"
    assert streamed(stops, [text]) == streamed(stops, list(text))


# --- properties -------------------------------------------------------------------------------

ALPHABET = "ab#\n星"
texts = st.text(alphabet=ALPHABET, max_size=40)
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), min_size=1, max_size=3)
cut_lists = st.lists(st.integers(min_value=0, max_value=1000), max_size=12)


def no_stop_inside_another(stops: Sequence[str]) -> bool:
    return not any(a != b and a in b for a in stops for b in stops)


@PROPERTY
@given(text=texts, stops=stop_lists)
def test_property_char_by_char(text: str, stops: list[str]) -> None:
    assume(no_stop_inside_another(stops))
    emitted, rest, stopped = run(stops, list(text))
    output = "".join(emitted) + rest
    assert output == up_to_first_stop(text, stops)
    assert stopped == any(stop in text for stop in stops)
    assert not any(stop in output for stop in stops)


@PROPERTY
@given(text=texts, stops=stop_lists, cuts=cut_lists)
def test_property_arbitrary_chunks(text: str, stops: list[str], cuts: list[int]) -> None:
    assume(no_stop_inside_another(stops))
    output = streamed(stops, split_at(text, cuts))
    assert output == up_to_first_stop(text, stops)
    assert not any(stop in output for stop in stops)


@PROPERTY
@given(text=texts, stops=stop_lists, cuts=cut_lists)
def test_property_never_leaks_with_any_stops(text: str, stops: list[str], cuts: list[int]) -> None:
    """Whatever the stops (even nested ones), output is a stop-free prefix of the input."""
    emitted, rest, stopped = run(stops, split_at(text, cuts))
    output = "".join(emitted) + rest
    assert text.startswith(output)
    assert not any(stop in output for stop in stops)
    assert stopped == any(stop in text for stop in stops)
    if stopped:
        assert any(text[len(output) :].startswith(stop) for stop in stops)
    else:
        assert output == text


@PROPERTY
@given(text=texts, stops=stop_lists)
def test_property_emitted_text_is_final(text: str, stops: list[str]) -> None:
    """Emitted text is never taken back: each prefix emitted is a prefix of the final output."""
    assume(no_stop_inside_another(stops))
    matcher = StopMatcher(stops)
    so_far = ""
    final = up_to_first_stop(text, stops)
    for char in text:
        so_far += matcher.feed(char)
        assert final.startswith(so_far)


# --- UTF-8 reassembly -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["星影", "🌌", "a星b🌌c", "naïve ✨"])
def test_utf8_split_byte_by_byte_emits_whole_chars_only(text: str) -> None:
    assembler = Utf8Assembler()
    pieces = [assembler.feed(bytes([byte])) for byte in text.encode("utf-8")]
    assert "".join(pieces) + assembler.flush() == text
    assert all(piece == "" or piece in text for piece in pieces)
    assert "\ufffd" not in "".join(pieces)


def test_utf8_character_split_across_two_pieces() -> None:
    data = "星影".encode()  # 6 bytes: two 3-byte characters
    assembler = Utf8Assembler()
    assert assembler.feed(data[:2]) == ""
    assert assembler.feed(data[2:4]) == "星"
    assert assembler.feed(data[4:]) == "影"
    assert assembler.flush() == ""


def test_utf8_emoji_split_in_the_middle() -> None:
    data = "ok 🌌!".encode()
    assembler = Utf8Assembler()
    assert assembler.feed(data[:4]) == "ok "
    assert assembler.feed(data[4:6]) == ""
    assert assembler.feed(data[6:]) == "🌌!"


def test_utf8_truncated_character_at_the_end_becomes_a_replacement() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed(b"x" + "星".encode()[:2]) == "x"
    assert assembler.flush() == "\ufffd"


def test_utf8_invalid_bytes_do_not_raise() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed(b"\xff") == "\ufffd"
    assert assembler.feed(b"ok") == "ok"


@PROPERTY
@given(text=st.text(alphabet="aé€星影🌌\x00\u07ff\U0010ffff", max_size=30), cuts=cut_lists)
def test_property_utf8_any_split_round_trips(text: str, cuts: list[int]) -> None:
    """Characters of 1, 2, 3 and 4 bytes, split anywhere."""
    data = text.encode("utf-8")
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    assembler = Utf8Assembler()
    pieces = [assembler.feed(data[start:end]) for start, end in pairwise(points)]
    assert "".join(pieces) + assembler.flush() == text
    assert "\ufffd" not in "".join(pieces)
