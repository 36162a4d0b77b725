"""Slash commands for long-term memory: what was used, remember, forget, recall."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from hoshikage.cli.commands import Command, CommandError
from hoshikage.memory.bank import MemoryBank
from hoshikage.store import MemoryFilter

if TYPE_CHECKING:
    from hoshikage.cli.repl import ChatRepl

RECALL_LIMIT = 10
SQLITE_MAX_INT = 2**63 - 1  # no memory id is larger (nor can a larger one be looked up)


def _bank(repl: ChatRepl) -> MemoryBank:
    if repl.memory is None:
        raise CommandError("Memory is off (setting memory = false).")
    return repl.memory.bank


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def _memory(repl: ChatRepl, _: str) -> None:
    report = repl.conversation.last_report
    if repl.memory is not None:
        status = repl.memory.bank.status(repl.conversation.namespace)
        model = status["embedding_model"] or "none"
        repl.console.print(
            f"Memory: {status['mode']} search (embedding model: {escape(model)}), "
            f"{status['memories']} memories."
        )
        if status.get("note"):
            repl.console.print(f"[dim]{escape(status['note'])}[/dim]")
    else:
        repl.console.print("Memory is off (setting memory = false).")
    if report is None:
        repl.console.print("No answer yet in this conversation.")
        return
    repl.console.print(f"Last answer's context: {escape(report.describe())}.")
    if report.memories:
        table = Table("id", "score", "when", "memory")
        for memory in report.memories:
            table.add_row(
                str(memory.id), f"{memory.score:.2f}", _when(memory.created_at), escape(memory.text)
            )
        repl.console.print(table)
    if report.summary is not None:
        summary = (
            repl.summaries.summary(repl.conversation.session.id)
            if (repl.conversation.session)
            else None
        )
        if summary is not None:
            repl.console.print(f"[dim]Summary of older turns:[/dim] {escape(summary.text)}")


def _remember(repl: ChatRepl, argument: str) -> None:
    if not argument:
        raise CommandError("Usage: /remember <text to keep for later conversations>")
    record = _bank(repl).add_fact(repl.conversation.namespace, argument)
    repl.console.print(f"Remembered as #{record.id}.")


def _forget(repl: ChatRepl, argument: str) -> None:
    try:
        ids = [int(part.lstrip("#")) for part in argument.replace(",", " ").split()]
    except ValueError:
        raise CommandError("Usage: /forget <id> [id …] (ids from /recall or /memory)") from None
    if not ids:
        raise CommandError("Usage: /forget <id> [id …] (ids from /recall or /memory)")
    possible = [i for i in ids if 0 < i <= SQLITE_MAX_INT]
    forgotten = _bank(repl).forget(repl.conversation.namespace, possible)
    missing = sorted(set(ids) - {record.id for record in forgotten})
    if forgotten:
        repl.console.print(f"Forgot {', '.join(f'#{r.id}' for r in forgotten)}.")
    if missing:
        repl.console.print(f"[yellow]No memory {', '.join(f'#{i}' for i in missing)}.[/yellow]")


def _recall(repl: ChatRepl, argument: str) -> None:
    if not argument:
        raise CommandError("Usage: /recall <what to look for>")
    bank = _bank(repl)
    where = MemoryFilter(namespace=repl.conversation.namespace)
    hits = bank.search(argument, where, limit=RECALL_LIMIT, min_score=bank.floor)
    if not hits:
        repl.console.print("Nothing remembered about that.")
        return
    table = Table("id", "score", "when", "memory")
    for hit in hits:
        table.add_row(
            str(hit.record.id),
            f"{hit.score:.2f}",
            _when(hit.record.created_at),
            escape(hit.record.text),
        )
    repl.console.print(table)


MEMORY_COMMANDS: tuple[Command, ...] = (
    Command("memory", "/memory", "what memory gave the last answer", _memory),
    Command("remember", "/remember <text>", "keep a fact for later conversations", _remember),
    Command("forget", "/forget <id> [id …]", "delete memories for good", _forget),
    Command("recall", "/recall <query>", "search what is remembered", _recall),
)
