"""`hoshikage models`: add, rm, ls, show, verify, pull, cp and keep-alive for registered models.

Registered with `app.add_typer(models_app, name="models")`. The CLI app is imported only when
a command runs, so either module may be imported first.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hoshikage.config import Settings, parse_duration
from hoshikage.models.registry import (
    ModelRecord,
    RegistryError,
    default_models_dir,
    open_registry,
)
from hoshikage.store import StoreError
from hoshikage.sysinfo import human_bytes

if TYPE_CHECKING:
    from hoshikage.models.hub import PullProgress

models_app = typer.Typer(
    name="models",
    help="Register, list, inspect, verify and pull GGUF models.",
    no_args_is_help=True,
)

# The same options as the other commands (cli/app.py), named after their settings.
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", show_default=False)
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(help="trace, debug, info, warn or error.", show_default=False),
]
AliasArg = Annotated[str, typer.Argument(help="The model's name, e.g. qwen2.5:0.5b.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_METADATA_SHOWN_CHARS = 160  # long values (chat templates) are cut in `show`


def _settings(console: Console, config_file: Path | None, log_level: str | None) -> Settings:
    from hoshikage.cli.app import settings_from_flags

    return settings_from_flags(console, {"config_file": config_file, "log_level": log_level})


def _fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    # soft_wrap: one line however long, so scripts can grep it.
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _duration(text: str) -> float | None:
    """Seconds from "300", "5m", "-1"; None for "default"."""
    if text.strip().lower() in ("default", "none"):
        return None
    seconds = parse_duration(text)
    if math.isnan(seconds):
        raise ValueError(f"not a duration: {text!r}")
    return seconds


def _keep_alive_text(seconds: float | None, settings: Settings) -> str:
    if seconds is None:
        return f"default ({settings.keep_alive:g} s)"
    return "forever" if seconds < 0 else f"{seconds:g} s"


def _record_json(record: ModelRecord) -> dict[str, Any]:
    data = asdict(record)
    data["path"] = str(record.path)
    data["digest"] = record.digest
    data["parameter_size"] = record.parameter_size
    return data


@models_app.command("add")
def add_command(
    path: Annotated[Path, typer.Argument(help="A .gguf file.", show_default=False)],
    alias: AliasArg,
    embedding: Annotated[
        bool | None,
        typer.Option(
            "--embedding/--no-embedding",
            help="Serve it as an embedding model (default: detected from the file).",
            show_default=False,
        ),
    ] = None,
    keep_alive_for: Annotated[
        str | None,
        typer.Option(
            "--keep-alive",
            help="How long it stays loaded when idle: seconds or 30s, 5m, 1h (negative: forever).",
            show_default=False,
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Take the name even if it is registered.")
    ] = False,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Register a GGUF file under a name."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        seconds = None if keep_alive_for is None else _duration(keep_alive_for)
    except ValueError as exc:
        raise _fail(console, f"--keep-alive: {exc}", code=2) from None
    try:
        with open_registry(settings) as registry:
            record = registry.add(
                path, alias, embedding=embedding, keep_alive_s=seconds, replace=replace
            )
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    kind = "embedding model" if record.embedding else "model"
    console.print(
        f"Added {kind} [bold]{escape(record.name)}[/bold]: {escape(str(record.path))} "
        f"({_summary(record)})"
    )


@models_app.command("rm")
def rm_command(
    alias: AliasArg, config_file: ConfigOpt = None, log_level: LogLevelOpt = None
) -> None:
    """Unregister a model (a pulled file no other name uses is deleted too)."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        with open_registry(settings) as registry:
            record = registry.remove(alias, delete_file_in=default_models_dir(settings))
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    deleted = "" if record.path.exists() else f" and deleted {escape(str(record.path))}"
    console.print(f"Removed {escape(record.name)}{deleted}")


@models_app.command("ls")
def ls_command(
    as_json: JsonOpt = False, config_file: ConfigOpt = None, log_level: LogLevelOpt = None
) -> None:
    """List the registered models."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        with open_registry(settings) as registry:
            records = registry.list()
    except StoreError as exc:
        raise _fail(console, str(exc)) from None
    if as_json:
        typer.echo(json.dumps([_record_json(record) for record in records], indent=2))
        return
    if not records:
        console.print(
            "No models registered. Add one with `hoshikage models add PATH NAME` or "
            "`hoshikage models pull REF`."
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "SIZE", "QUANT", "CONTEXT", "PARAMS", "EMBEDDING"):
        table.add_column(column, justify="right" if column in ("SIZE", "CONTEXT") else "left")
    for record in records:
        table.add_row(
            escape(record.name),
            human_bytes(record.size_bytes) if record.size_bytes is not None else "?",
            record.quantization or "?",
            str(record.context_length) if record.context_length else "?",
            record.parameter_size or "?",
            "yes" if record.embedding else "no",
        )
    console.print(table)


@models_app.command("show")
def show_command(
    alias: AliasArg,
    as_json: JsonOpt = False,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Everything the registry knows about a model, and its GGUF metadata."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        with open_registry(settings) as registry:
            record = registry.get(alias)
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    if as_json:
        typer.echo(json.dumps(_record_json(record), indent=2, ensure_ascii=False))
        return
    size = "?" if record.size_bytes is None else f"{human_bytes(record.size_bytes)}"
    fields = {
        "name": record.name,
        "path": str(record.path),
        "size": size + (f" ({record.size_bytes} bytes)" if record.size_bytes else ""),
        "sha256": record.sha256 or "not recorded",
        "architecture": record.architecture or "?",
        "quantization": record.quantization or "?",
        "context length": str(record.context_length or "?"),
        "parameters": (
            f"{record.parameter_size} ({record.parameters:,})" if record.parameters else "?"
        ),
        "embedding": "yes" if record.embedding else "no",
        "keep alive": _keep_alive_text(record.keep_alive_s, settings),
        "source": record.source,
        "added": datetime.fromtimestamp(record.added_at).isoformat(timespec="seconds"),
    }
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields.items():
        table.add_row(key, escape(value))
    console.print(table)
    if record.metadata:
        console.print("\n[bold]metadata[/bold]")
        metadata = Table(box=None, show_header=False, pad_edge=False)
        metadata.add_column(style="dim")
        metadata.add_column(overflow="fold")
        for key, value in sorted(record.metadata.items()):
            metadata.add_row(escape(key), escape(_shown(value)))
        console.print(metadata)


@models_app.command("verify")
def verify_command(
    alias: AliasArg, config_file: ConfigOpt = None, log_level: LogLevelOpt = None
) -> None:
    """Check the file's sha256 against the one recorded when it was added."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        with open_registry(settings) as registry:
            record = registry.get(alias)
            with console.status(f"Hashing {escape(str(record.path))}…"):
                intact = registry.verify(alias)
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    if not intact:
        raise _fail(
            console,
            f"{record.path} does not match the sha256 recorded for {record.name}: the file "
            "was changed or is damaged (pull or add it again)",
        )
    console.print(f"[green]ok[/green] {escape(record.name)}: sha256 {record.sha256} matches")


@models_app.command("cp")
def cp_command(
    source: Annotated[str, typer.Argument(help="A registered model.")],
    destination: Annotated[str, typer.Argument(help="The new name.")],
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Give a model a second name (the file is shared, not copied)."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        with open_registry(settings) as registry:
            record = registry.copy(source, destination)
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    console.print(f"Copied {escape(source)} to {escape(record.name)}")


@models_app.command("keep-alive", context_settings={"ignore_unknown_options": True})
def keep_alive_command(
    alias: AliasArg,
    duration: Annotated[
        str, typer.Argument(help="Seconds or 30s, 5m, 1h; negative: forever; 'default'.")
    ],
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Set how long a model stays loaded after its last request."""
    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    try:
        seconds = _duration(duration)
    except ValueError as exc:
        raise _fail(console, str(exc), code=2) from None
    try:
        with open_registry(settings) as registry:
            record = registry.set_keep_alive(alias, seconds)
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    console.print(
        f"{escape(record.name)}: keep-alive {_keep_alive_text(record.keep_alive_s, settings)}"
    )


@models_app.command("pull")
def pull_command(
    ref: Annotated[
        str,
        typer.Argument(
            help="hf://<owner>/<repo>/<file>.gguf or <owner>/<repo>:<quant> (e.g. :Q4_K_M)."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Register it under this name.", show_default=False),
    ] = None,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Download a GGUF from Hugging Face (resumable, sha256-verified) and register it."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from hoshikage.models.hub import DOWNLOADING, SUCCESS, pull

    console = Console(highlight=False)
    settings = _settings(console, config_file, log_level)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task: TaskID | None = None

    def show(event: PullProgress) -> None:
        nonlocal task
        if event.status != DOWNLOADING:
            if event.status != SUCCESS:
                bar.console.print(event.status)
            return
        if task is None:  # the bar starts with the download, so errors before it stay one line
            if event.completed:
                console.print(f"resuming from {human_bytes(event.completed)}")
            label = f"pulling {(event.digest or 'sha256:').removeprefix('sha256:')[:12]}"
            task = bar.add_task(label.strip(), total=event.total, completed=event.completed or 0)
            bar.start()
        else:
            bar.update(task, total=event.total, completed=event.completed or 0)

    try:
        try:
            with open_registry(settings) as registry:
                record = pull(ref, registry, default_models_dir(settings), name=name, progress=show)
        finally:
            if task is not None:  # started: stop it before any message, not to draw over it
                bar.stop()
    except (RegistryError, StoreError) as exc:
        raise _fail(console, str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(console, "interrupted: run the same pull again to continue it", 130) from None
    console.print(
        f"Pulled [bold]{escape(record.name)}[/bold] into {escape(str(record.path))} "
        f"({_summary(record)})"
    )


def _summary(record: ModelRecord) -> str:
    parts = [
        record.architecture or "unknown architecture",
        record.quantization or "",
        human_bytes(record.size_bytes) if record.size_bytes else "",
        f"context {record.context_length}" if record.context_length else "",
    ]
    return ", ".join(part for part in parts if part)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > _METADATA_SHOWN_CHARS:
        return f"{text[:_METADATA_SHOWN_CHARS]}… ({len(text)} characters)"
    return text
