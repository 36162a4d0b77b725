"""The terminal chat: read a message, stream the answer, store the turn, handle slash commands."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from hoshikage.cli.commands import COMMANDS, CommandError, SlashCommands
from hoshikage.cli.input import LineReader, read_message
from hoshikage.cli.memory_commands import MEMORY_COMMANDS
from hoshikage.config import Settings
from hoshikage.conversation.chat import Conversation, Turn
from hoshikage.conversation.context import ContextBuilder
from hoshikage.conversation.presets import PresetBook
from hoshikage.engine import Engine, EngineError, Generation
from hoshikage.memory.setup import LocalMemory, context_builder
from hoshikage.runtime import load_options, resolve_model, sampling_defaults
from hoshikage.store import MemoryStore, SessionStore, StoreError
from hoshikage.store.transfer import write_session_file
from hoshikage.turns.vocabulary import ReasoningDelta, TextDelta

log = logging.getLogger(__name__)


class ChatRepl:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionStore,
        console: Console,
        reader: LineReader,
        *,
        save_history: Path | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.console = console
        self.reader = reader
        self.save_history = save_history
        self.presets = PresetBook(settings.presets)
        self.engine: Engine | None = None
        self.model_name = settings.model
        self.conversation = conversation or self.new_conversation()
        self.commands = SlashCommands(self, (*COMMANDS, *MEMORY_COMMANDS))
        self.summaries = MemoryStore(sessions.database)
        self.memory: LocalMemory | None = None

    # --- set-up --------------------------------------------------------------------------
    def initial_system_prompt(self) -> str | None:
        if self.settings.system is not None:
            return self.settings.system or None
        return self.presets.get(self.settings.preset).system_prompt

    def new_conversation(self) -> Conversation:
        return Conversation(
            self.sessions,
            system_prompt=self.initial_system_prompt(),
            params=sampling_defaults(self.settings),
            model_label=self.model_name,
        )

    def load_model(self, name: str | None, settings: Settings | None = None) -> None:
        """Load (or switch to) a model; on failure the previous one is loaded back."""
        settings = settings or self.settings
        path = resolve_model(name, settings)
        Engine.check_loadable(path, load_options(settings))  # before giving up the current one
        previous = (self.model_name, self.settings) if self.engine is not None else None
        self.unload_model()
        try:
            with self.console.status(f"Loading {path.name}…", spinner="dots"):
                self.engine = Engine(path, load_options(settings))
        except EngineError:
            if previous is not None:
                with self.console.status("Loading the previous model back…", spinner="dots"):
                    self.engine = Engine(
                        resolve_model(previous[0], previous[1]), load_options(previous[1])
                    )
            raise
        self.model_name, self.settings = name, settings
        self.conversation.model_label = name
        info = self.engine.info
        self.console.print(
            f"[dim]Loaded {escape(info.name)} ({info.architecture}, {info.n_layer} layers) on "
            f"{info.backend} in {info.load_seconds:.2f}s · context {info.n_ctx} tokens[/dim]"
        )
        if self.engine.template.is_fallback:
            self.console.print(
                f"[dim]This model has no chat template; using the built-in "
                f"{self.engine.template.origin.removeprefix('built-in:')!r} one "
                f"(set chat_template to choose another).[/dim]"
            )

    def open_memory(self) -> None:
        """Long-term memory, unless switched off; a broken embedding model is reported and
        memory goes on by keywords rather than not at all."""
        if not self.settings.memory:
            return
        try:
            self.memory = LocalMemory.open(self.settings, self.sessions.database)
        except EngineError as exc:
            self.console.print(
                f"[yellow]embedding_model: {escape(str(exc))}; memory is searched by keywords "
                f"only[/yellow]"
            )
            self.memory = LocalMemory.open(
                self.settings.model_copy(update={"embedding_model": None}), self.sessions.database
            )

    def context_builder(self) -> ContextBuilder:
        """What goes into the window for the next turn: memories, a summary, recent turns."""
        assert self.engine is not None
        bank = self.memory.bank if self.memory is not None else None
        return context_builder(self.settings, self.engine, self.summaries, bank)

    def unload_model(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self.load_model(self.model_name)
        except EngineError as exc:
            self.console.print(f"[red]error:[/red] {escape(str(exc))}")
            return 1
        self.open_memory()
        self.console.print("[dim]Type /help for commands, Ctrl+D or /exit to quit.[/dim]")
        try:
            while True:
                try:
                    text = read_message(self.reader, self.settings.user_prompt)
                except KeyboardInterrupt:
                    continue  # ^C at the prompt clears the line, as in a shell
                except EOFError:
                    break
                if not text.strip():
                    continue
                if text.lstrip().startswith("/"):
                    if not self.run_command(text.strip()):
                        break
                    continue
                self.answer(text)
        finally:
            if self.memory is not None:
                self.memory.close()
            self.unload_model()
        return 0

    def run_command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        try:
            return self.commands.dispatch(line)
        except (CommandError, EngineError, StoreError) as exc:
            self.console.print(f"[yellow]{escape(str(exc))}[/yellow]")
            return True

    def answer(self, text: str) -> None:
        assert self.engine is not None
        try:
            turn = self.conversation.start_turn(self.engine, text, self.context_builder())
        except EngineError as exc:
            self.console.print(f"[red]error:[/red] {escape(str(exc))}")
            return
        with ctrl_c_cancels(turn.generation):
            self.finish_turn(turn)

    def finish_turn(self, turn: Turn) -> None:
        """Stream the answer, store the turn, report how it ended."""
        assert self.engine is not None
        try:
            self.stream(turn)
        except EngineError as exc:
            self.console.print(f"\n[red]error:[/red] {escape(str(exc))}")
            return
        self.conversation.commit(turn)
        if self.memory is not None:
            self.memory.indexer.notify()
        finish = turn.generation.finish
        assert finish is not None
        if finish.finish_reason == "cancelled":
            self.console.print("[dim](stopped)[/dim]")
        dropped = finish.dropped_messages + turn.report.dropped_messages
        if dropped:
            self.console.print(
                f"[dim]({dropped} oldest messages left out to fit the "
                f"{self.engine.n_ctx}-token context window)[/dim]"
            )
        if turn.report.summary is not None and turn.report.summary.updated:
            self.console.print(
                f"[dim](the {turn.report.summary.summarized_messages} oldest messages are "
                f"summarised to fit the {self.engine.n_ctx}-token window; /memory shows what "
                f"was used)[/dim]"
            )
        if self.save_history is not None:
            session_id = self.conversation.ensure_saved().id
            try:
                write_session_file(self.sessions, session_id, self.save_history)
            except OSError as exc:  # the turn is stored already; keep chatting
                self.console.print(
                    f"[yellow]cannot write the history file {escape(str(self.save_history))}: "
                    f"{escape(exc.strerror or str(exc))}[/yellow]"
                )

    def stream(self, turn: Turn) -> None:
        """Print the answer as it comes, thinking dimmed, with a spinner until the first."""
        status = self.console.status("Thinking…", spinner="dots")
        status.start()
        shown = False  # the answer's leading whitespace is not worth showing
        thinking = False  # inside the dimmed thinking block
        try:
            for event in turn.read():
                if not isinstance(event, TextDelta | ReasoningDelta):
                    continue
                text = event.text if shown else event.text.lstrip()
                if not text:
                    continue
                if not shown:
                    status.stop()
                    self.console.print(self.settings.assistant_prompt, end="", markup=False)
                    shown = True
                if isinstance(event, ReasoningDelta) != thinking:
                    thinking = not thinking
                    if not thinking:  # the answer starts below the thinking
                        self.console.print()
                style = "dim italic" if thinking else None
                self.console.print(
                    text, end="", markup=False, highlight=False, soft_wrap=True, style=style
                )
                self.console.file.flush()
        finally:
            status.stop()
        if not shown:
            self.console.print(self.settings.assistant_prompt, end="", markup=False)
        self.console.print()


@contextmanager
def ctrl_c_cancels(generation: Generation) -> Iterator[None]:
    """While an answer streams and is stored, Ctrl+C asks the engine to stop it.

    The engine ends the stream with finish reason 'cancelled', so the tokens shown are the
    tokens stored. A KeyboardInterrupt instead could land inside Rich's print (which then
    printed the same text twice), or outside any handler, ending the chat with a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: generation.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
