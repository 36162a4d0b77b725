"""Slash commands of the terminal chat. Each one is a small function over the REPL's state."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from hoshikage.config import Settings, SettingsError, parse_setting_value
from hoshikage.conversation.chat import Conversation, sampling_to_dict
from hoshikage.engine import SamplingParams
from hoshikage.sysinfo import gpu_memory, human_bytes, rss_bytes

if TYPE_CHECKING:
    from hoshikage.cli.repl import ChatRepl


class CommandError(Exception):
    """A one-line hint for the user: wrong command, bad value, missing argument."""


# Sampling parameters that are also settings: the ones a person tunes (with the settings' rules).
TUNABLE = tuple(
    field.name
    for field in dataclasses.fields(SamplingParams)
    if field.name in Settings.model_fields
)


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    run: Callable[[ChatRepl, str], bool | None]  # False ends the chat


class SlashCommands:
    def __init__(self, repl: ChatRepl, commands: Sequence[Command]) -> None:
        self._repl = repl
        self._commands = {command.name: command for command in commands}

    @property
    def listing(self) -> list[Command]:
        return list(self._commands.values())

    def dispatch(self, line: str) -> bool:
        name, _, argument = line[1:].partition(" ")
        command = self._commands.get(name.lower())
        if command is None:
            close = [known for known in self._commands if known.startswith(name[:2].lower())]
            hint = f" Did you mean /{close[0]}?" if close and name else ""
            raise CommandError(f"Unknown command /{name}.{hint} Type /help for the list.")
        return command.run(self._repl, argument.strip()) is not False


# --- the commands ----------------------------------------------------------------------------


def _help(repl: ChatRepl, _: str) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    for command in repl.commands.listing:
        table.add_row(f"[bold]{escape(command.usage)}[/bold]", command.summary)
    repl.console.print(table)
    repl.console.print(
        '[dim]Multi-line input: start with """ and end with """, or press Esc then Enter '
        "for a new line. Ctrl+C stops an answer; Ctrl+D quits.[/dim]"
    )


def _exit(_repl: ChatRepl, _: str) -> bool:
    return False


def _clear(repl: ChatRepl, _: str) -> None:
    old = repl.conversation
    repl.conversation = Conversation(
        repl.sessions,
        system_prompt=old.system_prompt,
        params=old.params,
        model_label=repl.model_name,
    )
    kept = f" (the previous one is saved as {old.session.label})" if old.session else ""
    repl.console.print(f"Started a new conversation{kept}.")


def _save(repl: ChatRepl, argument: str) -> None:
    conversation = repl.conversation
    session = conversation.rename(argument) if argument else conversation.ensure_saved()
    repl.console.print(
        f"Session saved as [bold]{escape(session.label)}[/bold] (every turn is saved as it "
        f"ends; /load {escape(session.label)} resumes it)."
    )


def _load(repl: ChatRepl, argument: str) -> None:
    if not argument:
        raise CommandError("Usage: /load <name or id> (see /sessions)")
    session = repl.sessions.find(argument)
    repl.conversation = Conversation.resume(
        repl.sessions, session, defaults=repl.conversation.params
    )
    count = len(repl.conversation.history)
    repl.console.print(f"Resumed [bold]{escape(session.label)}[/bold]: {count} messages.")
    for message in repl.conversation.history[-2:]:
        label = (
            repl.settings.user_prompt if message.role == "user" else repl.settings.assistant_prompt
        )
        repl.console.print(f"[dim]{escape(label)}{escape(message.content)}[/dim]")
    if session.model and session.model != repl.model_name:
        repl.console.print(
            f"[dim]This session was held with {escape(session.model)}; "
            f"/model {escape(session.model)} switches to it.[/dim]"
        )


def _sessions(repl: ChatRepl, _: str) -> None:
    sessions = repl.sessions.recent(limit=30)
    if not sessions:
        repl.console.print("No saved sessions yet.")
        return
    table = Table("name / id", "updated", "messages", "model")
    current = repl.conversation.session.id if repl.conversation.session else None
    for session in sessions:
        marker = " *" if session.id == current else ""
        table.add_row(
            escape(session.label) + marker,
            datetime.fromtimestamp(session.updated_at).strftime("%Y-%m-%d %H:%M"),
            str(session.message_count),
            escape(session.model or ""),
        )
    repl.console.print(table)


def _list_presets(repl: ChatRepl) -> None:
    table = Table("preset", "description")
    for preset in repl.presets.all():
        current = " *" if preset.system_prompt == repl.conversation.system_prompt else ""
        table.add_row(escape(preset.name) + current, escape(preset.description))
    repl.console.print(table)


def _set_system(repl: ChatRepl, prompt: str | None, label: str) -> None:
    repl.conversation.system_prompt = prompt
    repl.conversation.save_settings()
    repl.console.print(f"System prompt set ({escape(label)}).")


def _system(repl: ChatRepl, argument: str) -> None:
    if not argument:
        current = repl.conversation.system_prompt
        repl.console.print(f"System prompt: {escape(current) if current else '(none)'}")
        _list_presets(repl)
        repl.console.print(
            "[dim]/system <text or preset name> sets it; /system none clears it.[/dim]"
        )
        return
    if argument.lower() == "none":
        _set_system(repl, None, "cleared")
    elif argument in repl.presets:
        _set_system(repl, repl.presets.get(argument).system_prompt, f"preset {argument}")
    else:
        _set_system(repl, argument, "custom")


def _preset(repl: ChatRepl, argument: str) -> None:
    if not argument:
        _list_presets(repl)
        return
    try:
        preset = repl.presets.get(argument)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    _set_system(repl, preset.system_prompt, f"preset {preset.name}")


def _params(repl: ChatRepl, _: str) -> None:
    table = Table("parameter", "value")
    values = sampling_to_dict(repl.conversation.params)
    for name in TUNABLE:
        value = values[name]
        table.add_row(name, "default" if value is None else _shown(value))
    repl.console.print(table)
    repl.console.print(
        "[dim]/set <parameter> <value> changes one; 'none' resets seed or max_tokens.[/dim]"
    )


def _shown(value: object) -> str:
    """A value as the user would type it back (stop strings as a JSON-like list)."""
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _set(repl: ChatRepl, argument: str) -> None:
    name, _, raw = argument.partition(" ")
    if not name or not raw.strip():
        raise CommandError(f"Usage: /set <parameter> <value>; parameters: {', '.join(TUNABLE)}")
    if name not in TUNABLE:
        raise CommandError(f"Unknown parameter {name!r}; one of: {', '.join(TUNABLE)}")
    try:
        value = parse_setting_value(name, raw)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:  # a malformed JSON list for `stop`
        raise CommandError(f"invalid value {raw.strip()!r} for {name}: {exc}") from None
    if name == "stop":
        value = tuple(value)
    repl.conversation.params = dataclasses.replace(repl.conversation.params, **{name: value})
    repl.conversation.save_settings()
    repl.console.print(f"{name} = {_shown(value)}")


def _model(repl: ChatRepl, argument: str) -> None:
    if not argument:
        info = repl.engine.info if repl.engine else None
        repl.console.print(f"Model: {escape(info.path) if info else '(none)'}")
        return
    repl.load_model(argument)


def _backend(repl: ChatRepl, argument: str) -> None:
    if not argument:
        raise CommandError("Usage: /backend auto|cpu|cuda|metal|vulkan|hybrid [gpu_layers]")
    parts = shlex.split(argument)
    try:
        update: dict[str, object] = {"backend": parse_setting_value("backend", parts[0])}
        if len(parts) > 1:
            update["gpu_layers"] = parse_setting_value("gpu_layers", parts[1])
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    repl.load_model(repl.model_name, repl.settings.model_copy(update=update))


def _stats(repl: ChatRepl, _: str) -> None:
    stats = repl.conversation.stats
    if stats.last is None:
        repl.console.print("No answers yet in this conversation.")
        return
    last = stats.last
    table = Table("", "last answer", "this conversation")
    table.add_row("answers", "1", str(stats.turns))
    table.add_row(
        "prompt tokens (reused from cache)",
        f"{last.usage.prompt_tokens} ({last.usage.cached_prompt_tokens})",
        f"{stats.prompt_tokens} ({stats.cached_prompt_tokens})",
    )
    table.add_row(
        "completion tokens", str(last.usage.completion_tokens), str(stats.completion_tokens)
    )
    table.add_row("time to first token", f"{last.timings.time_to_first_token_s:.3f} s", "")
    table.add_row("prefill speed", f"{last.timings.prefill_tokens_per_s:.1f} tok/s", "")
    table.add_row(
        "decode speed",
        f"{last.timings.decode_tokens_per_s:.1f} tok/s",
        f"{stats.mean_decode_tokens_per_s:.1f} tok/s",
    )
    table.add_row("total time", f"{last.timings.total_s:.2f} s", f"{stats.total_seconds:.2f} s")
    table.add_row("finish reason", last.finish_reason, "")
    report = repl.conversation.last_report
    if report is not None:
        table.add_row("context", escape(report.describe()), "")
    repl.console.print(table)


def _status(repl: ChatRepl, _: str) -> None:
    table = Table(show_header=False)
    engine = repl.engine
    if engine is not None:
        info = engine.info
        table.add_row("model", f"{escape(info.name)} · {escape(info.path)}")
        table.add_row(
            "architecture",
            f"{info.architecture}, {info.n_layer} layers, {info.n_params / 1e6:.1f}M parameters, "
            f"{human_bytes(info.size_bytes)}",
        )
        layers = "all" if info.n_gpu_layers < 0 else str(info.n_gpu_layers)
        table.add_row("backend", f"{info.backend} (GPU layers: {layers})")
        used = engine.scheduler.cached_tokens
        table.add_row("context", f"{used} / {info.n_ctx} tokens in the KV cache")
        table.add_row("chat template", info.chat_template_source)
    table.add_row("process memory", human_bytes(rss_bytes()))
    gpus = gpu_memory()
    if gpus is None:
        table.add_row("GPU memory", "n/a (no NVIDIA GPU or NVML)")
    for gpu in gpus or []:
        table.add_row(
            "GPU memory",
            f"{escape(gpu.name)}: {human_bytes(gpu.used_bytes)} / {human_bytes(gpu.total_bytes)}",
        )
    if repl.memory is None:
        table.add_row("memory", "off")
    else:
        memory = repl.memory.bank.status(repl.conversation.namespace)
        model = memory["embedding_model"] or "no embedding model: keywords only"
        table.add_row("memory", f"{memory['mode']} ({escape(model)}), {memory['memories']} kept")
    session = repl.conversation.session
    table.add_row(
        "session",
        f"{escape(session.label)} ({len(repl.conversation.history)} messages)"
        if session
        else "new (saved after the first answer)",
    )
    repl.console.print(table)


COMMANDS: tuple[Command, ...] = (
    Command("help", "/help", "this list", _help),
    Command("exit", "/exit", "quit (everything is already saved)", _exit),
    Command("quit", "/quit", "quit", _exit),
    Command("clear", "/clear", "start a new conversation", _clear),
    Command("save", "/save [name]", "name this session", _save),
    Command("load", "/load <name>", "resume a saved session", _load),
    Command("sessions", "/sessions", "list saved sessions", _sessions),
    Command("system", "/system [text|preset]", "show or set the system prompt", _system),
    Command("preset", "/preset [name]", "list presets or use one", _preset),
    Command("params", "/params", "show sampling parameters", _params),
    Command("set", "/set <param> <value>", "change a sampling parameter", _set),
    Command("model", "/model [path|alias]", "show or switch the model", _model),
    Command("backend", "/backend <type> [layers]", "reload on another backend", _backend),
    Command("stats", "/stats", "speed and tokens: last answer and conversation", _stats),
    Command("status", "/status", "model, backend, context and memory use", _status),
)
