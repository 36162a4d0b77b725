"""The `hoshikage` command: chat, bench, and (later) serve and models."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from hoshikage import __version__
from hoshikage.cli.options import EmbeddingModelOpt, MemoryOpt
from hoshikage.config import Settings, SettingsError, load_settings
from hoshikage.engine import EngineError
from hoshikage.logging_setup import configure_logging
from hoshikage.store import StoreError

log = logging.getLogger(__name__)

app = typer.Typer(
    name="hoshikage",
    help="Hoshikage (星影): chat with local GGUF models, privately, on your own machine.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

# Options shared by every command that loads a model. Each maps to the setting of the same
# name (see `Settings`); a flag that is not given leaves the environment and file in charge.
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", show_default=False)
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="GGUF file path or alias.", show_default=False)
]
BackendOpt = Annotated[
    str | None,
    typer.Option(help="auto, cpu, cuda, metal, vulkan or hybrid.", show_default=False),
]
GpuLayersOpt = Annotated[
    int | None, typer.Option(help="Layers to offload to the GPU (-1 = all).", show_default=False)
]
CtxOpt = Annotated[
    int | None,
    typer.Option(
        "--n-ctx", "--ctx-size", "-c", help="Context window in tokens.", show_default=False
    ),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", "-t", help="CPU threads.", show_default=False)
]
FlashOpt = Annotated[
    str | None, typer.Option("--flash-attn", help="auto, on or off.", show_default=False)
]
KvTypeOpt = Annotated[
    str | None, typer.Option("--kv-cache-type", help="f16, q8_0, q4_0 …", show_default=False)
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        help="Chat template: plain, transcript, chatml or Jinja text.", show_default=False
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(help="trace, debug, info, warn or error.", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hoshikage {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Hoshikage (星影): chat with local GGUF models."""


def fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def settings_from_flags(console: Console, flags: dict[str, Any]) -> Settings:
    """Settings with flags over environment over file; a bad value exits with its reason.

    Command parameters are named after the settings they set, so a command passes its
    locals(); those that are not settings (and flags not given, None) are left out.
    """
    given = {key: value for key, value in flags.items() if key in Settings.model_fields}
    try:
        settings = load_settings(**given)
    except SettingsError as exc:
        raise fail(console, str(exc), code=2) from None
    log_file = configure_logging(settings.log_level, settings.log_dir)
    log.debug("settings loaded; log file %s", log_file)
    return settings


def with_default_model(console: Console, settings: Settings) -> Settings:
    """The settings, with the starter model when they name no model and the user has none
    (see `default_model`), saying so first thing; nothing to run at all exits 1 with the
    ways to get a model, before anything else is opened."""
    from hoshikage.models.starter import STARTER_NAME, starter_notice
    from hoshikage.runtime import default_model

    try:
        defaulted = default_model(settings)
    except (EngineError, StoreError) as exc:
        raise fail(console, str(exc)) from None
    if defaulted is None:
        return settings
    log.info("no model given: using the starter model %s", defaulted.model_aliases[STARTER_NAME])
    console.print(f"[dim]{escape(starter_notice())}[/dim]", soft_wrap=True)
    return defaulted


@app.command()
def chat(
    model: ModelOpt = None,
    config_file: ConfigOpt = None,
    backend: BackendOpt = None,
    gpu_layers: GpuLayersOpt = None,
    n_ctx: CtxOpt = None,
    n_threads: ThreadsOpt = None,
    flash_attn: FlashOpt = None,
    kv_cache_type: KvTypeOpt = None,
    chat_template: TemplateOpt = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Top-k sampling.")] = None,
    min_p: Annotated[float | None, typer.Option(help="Min-p sampling.")] = None,
    repeat_penalty: Annotated[float | None, typer.Option(help="Repeat penalty.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    preset: Annotated[str | None, typer.Option(help="Persona preset (see /preset).")] = None,
    user_prompt: Annotated[str | None, typer.Option(help="Input prompt text.")] = None,
    assistant_prompt: Annotated[str | None, typer.Option(help="Answer label.")] = None,
    embedding_model: EmbeddingModelOpt = None,
    memory: MemoryOpt = None,
    log_level: LogLevelOpt = None,
    load_history: Annotated[
        Path | None, typer.Option(help="Start from a session exported as JSON.")
    ] = None,
    save_history: Annotated[
        Path | None, typer.Option(help="Keep a JSON export of this session, updated per turn.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--session", "-s", help="Resume a saved session by name.")
    ] = None,
) -> None:
    """Chat with a model in the terminal; every turn is saved as it ends."""
    from hoshikage.cli.input import PipeReader, TerminalReader
    from hoshikage.cli.repl import ChatRepl
    from hoshikage.conversation.chat import Conversation
    from hoshikage.conversation.presets import PresetBook
    from hoshikage.runtime import open_sessions, sampling_defaults
    from hoshikage.store.transfer import import_session_file

    console = Console(highlight=False)
    flags = dict(locals())
    settings = settings_from_flags(console, flags)
    if settings.preset not in PresetBook(settings.presets):
        raise fail(console, f"unknown preset {settings.preset!r}; see `/preset` for the list", 2)
    settings = with_default_model(console, settings)
    try:
        sessions = open_sessions(settings)
        conversation = None
        if load_history is not None or resume is not None:
            record = (
                import_session_file(sessions, load_history)
                if load_history is not None
                else sessions.find(resume or "")
            )
            conversation = Conversation.resume(
                sessions, record, defaults=sampling_defaults(settings)
            )
            conversation.model_label = settings.model
            conversation.apply_overrides(flags)
            console.print(
                f"[dim]Continuing session {escape(record.label)} "
                f"({len(conversation.history)} messages).[/dim]"
            )
    except StoreError as exc:
        raise fail(console, str(exc)) from None
    interactive = sys.stdin.isatty()
    reader = TerminalReader(settings.input_history_path) if interactive else PipeReader()
    repl = ChatRepl(
        settings, sessions, console, reader, save_history=save_history, conversation=conversation
    )
    raise typer.Exit(repl.run())


@app.command()
def bench(
    model: ModelOpt = None,
    config_file: ConfigOpt = None,
    backend: BackendOpt = None,
    gpu_layers: GpuLayersOpt = None,
    n_ctx: CtxOpt = None,
    n_threads: ThreadsOpt = None,
    flash_attn: FlashOpt = None,
    kv_cache_type: KvTypeOpt = None,
    log_level: LogLevelOpt = None,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Prompt length (prefill).")] = 128,
    gen_tokens: Annotated[int, typer.Option(min=2, help="Tokens to generate (decode).")] = 64,
    repetitions: Annotated[int, typer.Option(min=1, help="Runs to average.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure a model: load time, time to first token, prefill and decode speed, memory."""
    from hoshikage.cli.bench import print_report, run_bench

    console = Console(highlight=False)
    settings = settings_from_flags(console, dict(locals()))
    try:
        report = run_bench(
            settings,
            prompt_tokens=prompt_tokens,
            gen_tokens=gen_tokens,
            repetitions=repetitions,
        )
    except EngineError as exc:
        raise fail(console, str(exc)) from None
    print_report(console, report, as_json=as_json)


def _register_subcommands() -> None:
    from hoshikage.cli.batch_cmd import batch
    from hoshikage.cli.memory_cmd import memory_app
    from hoshikage.cli.models_cmd import models_app
    from hoshikage.cli.serve_cmd import serve

    app.command()(serve)
    app.command()(batch)
    app.add_typer(models_app, name="models", help="Register, pull, list and verify models.")
    app.add_typer(
        memory_app, name="memory", help="Search, list, forget, re-embed and export memory."
    )


def main() -> None:
    app()


_register_subcommands()
