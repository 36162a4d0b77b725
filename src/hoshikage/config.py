"""Settings: one pydantic-settings model read from a TOML file, HOSHIKAGE_* variables and flags.

Precedence, highest first: values passed in (command-line flags), environment variables,
the TOML file (``--config`` / ``HOSHIKAGE_CONFIG_FILE`` / the user config dir), defaults.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import platformdirs
from pydantic import BeforeValidator, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME = "hoshikage"
ENV_PREFIX = "HOSHIKAGE_"

Backend = Literal["auto", "cpu", "cuda", "metal", "vulkan", "hybrid"]
LogLevel = Literal["trace", "debug", "info", "warn", "error"]
FlashAttention = Literal["auto", "on", "off"]
KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]


class SettingsError(ValueError):
    """A setting has a value that is not allowed; the message names key, value and rule."""


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def default_log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME))


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from a number or an Ollama-style duration: "300", "5m", "1h30m", "-1"."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    rest, total = text.lstrip("+-"), 0.0
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789."))
        unit = next((u for u in ("ms", "s", "m", "h", "d") if rest[digits:].startswith(u)), None)
        if digits == 0 or unit is None:
            raise ValueError(f"not a duration: {value!r} (examples: 30s, 5m, 1h, -1)")
        total += float(rest[:digits]) * _DURATION_UNITS[unit]
        rest = rest[digits + len(unit) :]
    return sign * total


def _duration_before(value: Any) -> Any:
    if isinstance(value, str):
        seconds = parse_duration(value)  # a ValueError becomes a validation error
        if not math.isfinite(seconds):
            raise ValueError(f"not a duration: {value!r}")
        return seconds
    return value


# Seconds, given as a number or as an Ollama-style duration string ("5m", "1h30m", "-1").
Duration = Annotated[float, BeforeValidator(_duration_before)]


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by a higher-priority source, or the default one if it exists."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # whole-file source: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        named = self.current_state.get("config_file")
        path = Path(named).expanduser() if named else default_config_file()
        if not path.exists():
            if named:
                raise SettingsError(f"config file {path} does not exist")
            return {}
        try:
            with path.open("rb") as handle:
                return cast(dict[str, Any], tomllib.load(handle))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {path}: {exc}") from exc


class Settings(BaseSettings):
    """Every knob of Hoshikage. Each field is a TOML key, a HOSHIKAGE_<KEY> variable and a flag."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    config_file: Path | None = Field(None, description="TOML settings file to read.")

    # --- model and hardware ---------------------------------------------------------------
    model: str | None = Field(None, description="GGUF file path or registered alias to load.")
    model_aliases: dict[str, Path] = Field(
        default_factory=dict, description="Short names for GGUF files: alias = path."
    )
    backend: Backend = Field(
        "auto",
        description="auto: offload all layers if a GPU backend is built in; cpu: none; "
        "cuda/metal/vulkan: all layers on that backend; hybrid: gpu_layers layers.",
    )
    gpu_layers: int | None = Field(
        None, ge=-1, description="Layers to offload (-1 = all). Required by backend=hybrid."
    )
    n_ctx: int = Field(
        4096,
        ge=0,
        description="Context window in tokens, at most the model's training context "
        "(0 = that training context).",
    )
    n_batch: int = Field(512, ge=1, description="Prompt tokens evaluated per decode call.")
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads for decoding (default: physical cores)."
    )
    use_mmap: bool = Field(True, description="Memory-map the model file.")
    use_mlock: bool = Field(False, description="Lock the model in RAM (no swapping).")
    flash_attn: FlashAttention = Field("auto", description="Flash attention: auto, on or off.")
    kv_cache_type: KvCacheType = Field(
        "f16", description="KV cache element type; quantised types need flash attention."
    )
    chat_template: str | None = Field(
        None,
        description="Override the model's chat template: a built-in name (plain, transcript, "
        "chatml) or a Jinja template string.",
    )

    # --- sampling defaults ------------------------------------------------------------------
    temperature: float = Field(0.8, ge=0.0, le=5.0, description="Sampling temperature; 0=greedy.")
    top_p: float = Field(0.95, ge=0.0, le=1.0, description="Nucleus sampling threshold.")
    top_k: int = Field(40, ge=0, description="Keep the k most likely tokens (0 = all).")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="Drop tokens below min_p x the top.")
    repeat_penalty: float = Field(1.1, gt=0.0, le=5.0, description="Penalty for repeated tokens.")
    repeat_last_n: int = Field(64, ge=0, description="Tokens the repeat penalty looks back over.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI presence penalty.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI frequency penalty.")
    seed: int | None = Field(None, ge=0, description="Sampling seed (default: random).")
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens per answer (default: until done or context full)."
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end an answer.")

    # --- conversation -----------------------------------------------------------------------
    system: str | None = Field(None, description="System prompt (overrides the preset's).")
    preset: str = Field("default", description="Persona preset for new chats.")
    presets: dict[str, str] = Field(
        default_factory=dict, description="User-defined presets: name = system prompt."
    )
    user_prompt: str = Field("You> ", description="Prompt shown before your input.")
    assistant_prompt: str = Field("Assistant> ", description="Label shown before answers.")

    # --- server -----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer keys the server accepts (none: no auth)."
    )
    api_key_file: Path | None = Field(None, description="File with one API key per line.")
    admin_api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer keys that may also change models (pull, delete, copy, unload); "
        "plain keys may only use them. Setting one turns auth on.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API."
    )
    max_request_bytes: int = Field(
        8_000_000, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    keep_alive: Duration = Field(
        300.0, description="Seconds a model stays loaded after its last request (<0: forever)."
    )
    max_loaded_models: int = Field(3, ge=1, description="Models loaded at once, at most.")
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="Server: requests per model decoded together (continuous batching), each "
        "with a full context window. The terminal chat uses one.",
    )
    memory_budget: int | None = Field(
        None, ge=0, description="Bytes models may use (default: 90% of physical memory)."
    )
    max_queue: int = Field(
        16, ge=0, description="Requests that may wait per model beyond the running one (429)."
    )
    context_overflow: Literal["drop", "error"] = Field(
        "drop",
        description="A prompt too long for the window: drop oldest turns and say so, or 400.",
    )
    ramdisk_path: Path | None = Field(
        None, description="RAM-backed directory to keep model copies in for fast reloads."
    )

    # --- memory -----------------------------------------------------------------------------
    memory: bool = Field(
        True,
        description="Long-term memory: remember turns and bring relevant ones into new "
        "conversations (false: nothing is indexed or recalled).",
    )
    embedding_model: str | None = Field(
        None,
        description="GGUF embedding model (path, alias or registered name) for semantic "
        "memory; without one, memory is searched by keywords.",
    )
    memory_backend: Literal["sqlite", "chroma"] = Field(
        "sqlite",
        description="Where memory vectors are searched: sqlite (NumPy over the store) or "
        "chroma (pip install 'hoshikage[chroma]').",
    )
    chroma_path: Path | None = Field(
        None, description="Embedded Chroma directory (default: <data_dir>/chroma)."
    )
    chroma_url: str | None = Field(
        None, description="A Chroma server's URL (http://host:port) instead of embedded Chroma."
    )
    memory_top_k: int = Field(5, ge=0, le=50, description="Memories considered per turn.")
    memory_min_score: float = Field(
        0.25,
        ge=-1.0,
        le=1.0,
        description="Least blended similarity for a memory to enter the context (semantic).",
    )
    memory_tokens: int = Field(
        384, ge=0, description="Token budget of the memory block in the context."
    )
    summaries: bool = Field(
        True,
        description="Summarise a conversation's older turns when they outgrow the window "
        "(false: drop them).",
    )
    summary_max_tokens: int = Field(
        256, ge=16, description="Longest summary of older turns, in tokens."
    )
    cluster_divisor: int = Field(
        100, ge=1, description="Clustering summaries: k = turns / cluster_divisor, clamped."
    )
    min_clusters: int = Field(1, ge=1, description="Clustering summaries: fewest clusters.")
    max_clusters: int = Field(20, ge=1, description="Clustering summaries: most clusters.")

    # --- places and logging -----------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where sessions and history live."
    )
    log_dir: Path = Field(default_factory=default_log_dir, description="Where the log file goes.")
    log_level: LogLevel = Field("warn", description="Console log level.")

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(not item for item in value):
            raise ValueError("stop strings must not be empty")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))

    @property
    def database_path(self) -> Path:
        return self.data_dir / "hoshikage.db"

    @property
    def input_history_path(self) -> Path:
        return self.data_dir / "input_history"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting: its key, the value given and what is allowed."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; see the settings in README.md"
            lines.append(f"unknown setting {key!r} (value {error['input']!r}){hint}")
        else:
            lines.append(f"invalid setting {key} = {error['input']!r}: {error['msg']}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from flags (overrides), environment and file; raise SettingsError if bad.

    Overrides that are None mean "flag not given" and do not shadow lower sources.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def parse_setting_value(name: str, raw: str) -> Any:
    """Validate text typed by a user (e.g. `/set top_k 20`) against the setting's own rules.

    'none' clears an optional setting; a list setting takes one string or a JSON list.
    """
    field = Settings.model_fields.get(name)
    if field is None:
        raise SettingsError(f"unknown setting {name!r}")
    text = raw.strip()
    value: Any = text
    if text.lower() in ("none", "null", "default") and not field.is_required():
        value = None
    elif field.annotation == list[str]:
        value = json.loads(text) if text.startswith("[") else [text]
    # A one-field model with the setting's own FieldInfo applies exactly its rules.
    single = create_model("SingleSetting", value=(cast(Any, field.annotation), field))
    try:
        return single.model_validate({"value": value}).model_dump()["value"]
    except ValidationError as exc:
        reason = "; ".join(error["msg"] for error in exc.errors())
        raise SettingsError(f"invalid value {raw!r} for {name}: {reason}") from None
