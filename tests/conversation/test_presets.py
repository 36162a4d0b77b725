"""Persona presets: built-in ones, the user's own, and clear errors for unknown names."""

from __future__ import annotations

import re

import pytest

from hoshikage.conversation.presets import BUILTIN_PRESETS, Preset, PresetBook

KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff]")


def test_at_least_seven_builtins() -> None:
    book = PresetBook()
    assert len(BUILTIN_PRESETS) >= 7
    assert len(book.names()) == len(BUILTIN_PRESETS)
    for name in ("default", "translator", "tsundere"):
        assert name in book
    assert all(preset.builtin for preset in book.all())


def test_builtin_names_are_unique_and_prompts_not_empty() -> None:
    names = [preset.name for preset in BUILTIN_PRESETS]
    assert len(names) == len(set(names))
    for preset in BUILTIN_PRESETS:
        assert preset.system_prompt.strip()
        assert preset.description.strip()


def test_tsundere_prompt_is_japanese() -> None:
    prompt = PresetBook().get("tsundere").system_prompt
    assert KANA.search(prompt)
    assert "ツンデレ" in prompt


def test_translator_covers_japanese_and_english() -> None:
    prompt = PresetBook().get("translator").system_prompt
    assert "Japanese" in prompt
    assert "English" in prompt
    assert KANA.search(prompt)


def test_user_presets_are_added() -> None:
    book = PresetBook({"pirate": "Talk like a pirate."})
    preset = book.get("pirate")
    assert preset == Preset("pirate", "Talk like a pirate.", "user-defined", builtin=False)
    assert "pirate" in book
    assert book.names()[-1] == "pirate"
    assert len(book.all()) == len(BUILTIN_PRESETS) + 1


def test_user_preset_overrides_a_builtin() -> None:
    book = PresetBook({"concise": "One word answers."})
    preset = book.get("concise")
    assert preset.system_prompt == "One word answers."
    assert not preset.builtin
    assert book.names().count("concise") == 1
    assert len(book.all()) == len(BUILTIN_PRESETS)


def test_unknown_preset_lists_known_names() -> None:
    book = PresetBook({"pirate": "Arr."})
    with pytest.raises(KeyError) as caught:
        book.get("pirat")
    message = caught.value.args[0]
    assert "unknown preset 'pirat'" in message
    for name in ("default", "translator", "tsundere", "pirate"):
        assert name in message


def test_contains_with_other_types() -> None:
    assert 3 not in PresetBook()
    assert "nope" not in PresetBook()
