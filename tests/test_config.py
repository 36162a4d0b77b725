"""Settings: defaults, precedence of flags > environment > TOML file > defaults, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hoshikage.config import Settings, SettingsError, load_settings


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults --------------------------------------------------------------------------------


def test_defaults(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.model is None
    assert settings.model_aliases == {}
    assert settings.backend == "auto"
    assert settings.gpu_layers is None
    assert settings.n_ctx == 4096
    assert settings.n_batch == 512
    assert settings.use_mmap is True
    assert settings.use_mlock is False
    assert settings.flash_attn == "auto"
    assert settings.kv_cache_type == "f16"
    assert settings.chat_template is None
    assert settings.temperature == 0.8
    assert settings.top_p == 0.95
    assert settings.top_k == 40
    assert settings.min_p == 0.05
    assert settings.repeat_penalty == 1.1
    assert settings.seed is None
    assert settings.max_tokens is None
    assert settings.stop == []
    assert settings.system is None
    assert settings.preset == "default"
    assert settings.presets == {}
    assert settings.log_level == "warn"


def test_places_come_from_the_environment_fixture(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == isolated_env / "data"
    assert settings.log_dir == isolated_env / "logs"
    assert settings.config_file == isolated_env / "config.toml"
    assert settings.database_path == isolated_env / "data" / "hoshikage.db"
    assert settings.input_history_path == isolated_env / "data" / "input_history"


# --- precedence -------------------------------------------------------------------------------


def test_toml_file_overrides_defaults(isolated_env: Path) -> None:
    write_config(isolated_env / "config.toml", "temperature = 0.5\ntop_k = 10\n")
    settings = load_settings()
    assert settings.temperature == 0.5
    assert settings.top_k == 10
    assert settings.top_p == 0.95  # untouched keys keep their defaults


def test_environment_overrides_toml_file(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(isolated_env / "config.toml", "temperature = 0.5\ntop_k = 10\n")
    monkeypatch.setenv("HOSHIKAGE_TEMPERATURE", "0.3")
    settings = load_settings()
    assert settings.temperature == 0.3
    assert settings.top_k == 10  # the file still supplies what the environment does not


def test_flags_override_environment_and_toml_file(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(isolated_env / "config.toml", "temperature = 0.5\ntop_k = 10\n")
    monkeypatch.setenv("HOSHIKAGE_TEMPERATURE", "0.3")
    monkeypatch.setenv("HOSHIKAGE_TOP_K", "20")
    settings = load_settings(temperature=0.1)
    assert settings.temperature == 0.1
    assert settings.top_k == 20


def test_none_overrides_do_not_shadow_lower_sources(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(isolated_env / "config.toml", "top_k = 10\nseed = 7\n")
    monkeypatch.setenv("HOSHIKAGE_TEMPERATURE", "0.3")
    settings = load_settings(temperature=None, top_k=None, seed=None, model=None)
    assert settings.temperature == 0.3
    assert settings.top_k == 10
    assert settings.seed == 7
    assert settings.model is None


def test_config_file_named_by_environment_variable(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = write_config(isolated_env / "other.toml", 'backend = "cpu"\n')
    monkeypatch.setenv("HOSHIKAGE_CONFIG_FILE", str(other))
    settings = load_settings()
    assert settings.backend == "cpu"
    assert settings.config_file == other


def test_config_file_named_by_override_beats_environment(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_config(isolated_env / "env.toml", 'backend = "cpu"\nn_ctx = 1024\n')
    from_flag = write_config(isolated_env / "flag.toml", 'backend = "vulkan"\n')
    monkeypatch.setenv("HOSHIKAGE_CONFIG_FILE", str(from_env))
    settings = load_settings(config_file=from_flag)
    assert settings.backend == "vulkan"
    assert settings.n_ctx == 4096  # the environment's file is not read at all
    assert settings.config_file == from_flag


def test_config_file_override_accepts_a_string(isolated_env: Path) -> None:
    path = write_config(isolated_env / "flag.toml", "n_batch = 64\n")
    assert load_settings(config_file=str(path)).n_batch == 64


def test_list_setting_from_environment_is_json(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSHIKAGE_STOP", '["END", "###"]')
    assert load_settings().stop == ["END", "###"]


def test_toml_tables_for_presets_and_model_aliases(isolated_env: Path) -> None:
    write_config(
        isolated_env / "config.toml",
        'preset = "pirate"\n'
        "stop = ['</s>', 'User:']\n"
        "\n"
        "[presets]\n"
        'pirate = "Talk like a pirate."\n'
        'haiku = "Answer in haiku."\n'
        "\n"
        "[model_aliases]\n"
        'tiny = "/models/tiny.gguf"\n'
        '"qwen-0.5b" = "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"\n',
    )
    settings = load_settings()
    assert settings.preset == "pirate"
    assert settings.stop == ["</s>", "User:"]
    assert settings.presets == {"pirate": "Talk like a pirate.", "haiku": "Answer in haiku."}
    assert settings.model_aliases == {
        "tiny": Path("/models/tiny.gguf"),
        "qwen-0.5b": Path("/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"),
    }


# --- invalid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "shown", "allowed"),
    [
        ("temperature", 7, "7", "less than or equal to 5"),
        ("backend", "tpu", "'tpu'", "'auto', 'cpu', 'cuda', 'metal', 'vulkan' or 'hybrid'"),
        ("top_p", -1, "-1", "greater than or equal to 0"),
        ("top_p", 1.5, "1.5", "less than or equal to 1"),
        ("n_batch", 0, "0", "greater than or equal to 1"),
        ("log_level", "loud", "'loud'", "'trace'"),
        ("kv_cache_type", "q3", "'q3'", "'q8_0'"),
    ],
)
def test_invalid_flag_names_key_value_and_rule(
    isolated_env: Path, key: str, value: object, shown: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**{key: value})
    message = str(caught.value)
    assert key in message
    assert shown in message
    assert allowed in message


def test_invalid_environment_value_names_key_value_and_rule(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSHIKAGE_TEMPERATURE", "9")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "temperature" in message
    assert "9" in message
    assert "less than or equal to 5" in message


def test_unparsable_environment_value(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSHIKAGE_TOP_K", "many")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "top_k" in message
    assert "'many'" in message
    assert "valid integer" in message


def test_invalid_value_in_toml_file(isolated_env: Path) -> None:
    write_config(isolated_env / "config.toml", "temperature = 9.5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "temperature" in message
    assert "9.5" in message
    assert "less than or equal to 5" in message


def test_unknown_toml_key_is_refused(isolated_env: Path) -> None:
    write_config(isolated_env / "config.toml", "temprature = 0.5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "unknown setting" in message
    assert "'temprature'" in message
    assert "0.5" in message


def test_unknown_toml_key_message_says_what_is_allowed(isolated_env: Path) -> None:
    write_config(isolated_env / "config.toml", "temprature = 0.5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "temperature" in str(caught.value)


def test_unknown_flag_is_refused(isolated_env: Path) -> None:
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings(colour="red")


def test_malformed_toml_names_the_file(isolated_env: Path) -> None:
    path = write_config(isolated_env / "config.toml", "temperature = [\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "config file" in message
    assert str(path) in message


def test_missing_named_config_file(isolated_env: Path) -> None:
    missing = isolated_env / "nowhere" / "config.toml"
    with pytest.raises(SettingsError) as caught:
        load_settings(config_file=missing)
    message = str(caught.value)
    assert "config file" in message
    assert str(missing) in message
    assert "does not exist" in message


def test_missing_config_file_named_by_environment(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = isolated_env / "absent.toml"
    monkeypatch.setenv("HOSHIKAGE_CONFIG_FILE", str(missing))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()


@pytest.mark.parametrize("stop", [[""], ["END", ""]])
def test_empty_stop_string_is_refused(isolated_env: Path, stop: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(stop=stop)
    message = str(caught.value)
    assert "stop" in message
    assert repr(stop) in message
    assert "must not be empty" in message


def test_empty_stop_string_in_toml_file_is_refused(isolated_env: Path) -> None:
    write_config(isolated_env / "config.toml", "stop = ['']\n")
    with pytest.raises(SettingsError, match="stop strings must not be empty"):
        load_settings()


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --- immutability -----------------------------------------------------------------------------


def test_settings_are_frozen(isolated_env: Path) -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.temperature = 0.1
    assert settings.temperature == 0.8


def test_model_copy_makes_a_changed_copy(isolated_env: Path) -> None:
    settings = load_settings()
    changed = settings.model_copy(update={"temperature": 0.2})
    assert isinstance(changed, Settings)
    assert changed.temperature == 0.2
    assert settings.temperature == 0.8


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("2.5s", 2.5), ("500ms", 0.5)],
)
def test_durations_in_ollama_style(text: str, seconds: float) -> None:
    from hoshikage.config import parse_duration

    assert parse_duration(text) == seconds


def test_bad_durations_say_what_is_expected() -> None:
    from hoshikage.config import parse_duration

    with pytest.raises(ValueError, match="examples"):
        parse_duration("5x")
