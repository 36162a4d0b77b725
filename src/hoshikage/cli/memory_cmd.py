"""`hoshikage memory`: search, list, forget, reindex and export long-term memory.

Works on the store the terminal chat and the server share; `--namespace` picks whose memory
(default: the local user's; a server with API keys keeps each key's apart).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from hoshikage.cli.app import ConfigOpt, LogLevelOpt, fail, settings_from_flags
from hoshikage.engine import EngineError
from hoshikage.memory.bank import MemoryBank, memory_json
from hoshikage.memory.setup import local_embedder, memory_bank
from hoshikage.store import Database, MemoryFilter, MemoryRecord, SessionStore, StoreError

memory_app = typer.Typer(
    name="memory",
    help="Search, list, forget, re-embed and export long-term memory.",
    no_args_is_help=True,
)

NamespaceOpt = Annotated[
    str, typer.Option("--namespace", "-n", help="Whose memory (server namespaces: see ls).")
]
SessionOpt = Annotated[
    str | None, typer.Option("--session", "-s", help="Only this session's (id or name).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SQLITE_MAX_INT = 2**63 - 1  # larger numbers cannot even be looked up


@contextmanager
def _opened(
    console: Console, config_file: Path | None, log_level: str | None, *, embed: bool = True
) -> Iterator[tuple[SessionStore, MemoryBank]]:
    """The memory bank of the settings' store; the embedding model only when `embed`."""
    settings = settings_from_flags(console, {"config_file": config_file, "log_level": log_level})
    try:
        embedder = local_embedder(settings) if embed else None
    except EngineError as exc:
        raise fail(console, f"embedding_model: {exc}") from None
    database = Database(settings.database_path)
    try:
        yield SessionStore(database), memory_bank(settings, database, embedder)
    except typer.Exit:  # a RuntimeError too: already reported by the command
        raise
    except (StoreError, EngineError, RuntimeError) as exc:
        raise fail(console, str(exc)) from None
    finally:
        if embedder is not None:
            embedder.close()
        database.close()


def _session_id(sessions: SessionStore, reference: str | None) -> str | None:
    return None if reference is None else sessions.find(reference).id


def _table(records: list[tuple[MemoryRecord, float | None]]) -> Table:
    table = Table("id", "score", "when", "role", "session", "memory")
    for record, score in records:
        table.add_row(
            str(record.id),
            "" if score is None else f"{score:.2f}",
            datetime.fromtimestamp(record.created_at).strftime("%Y-%m-%d %H:%M"),
            record.role,
            (record.session_id or "")[:8],
            escape(record.text),
        )
    return table


def _floor(bank: MemoryBank, min_score: float | None) -> float | None:
    """The least score worth showing: the one a memory needs to enter a conversation."""
    return bank.floor if min_score is None else min_score


@memory_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    limit: Annotated[int, typer.Option(min=1, max=100, help="Results at most.")] = 10,
    min_score: Annotated[
        float | None,
        typer.Option(
            min=-1.0,
            max=1.0,
            help="Least score shown (default: what a memory needs to enter a conversation).",
            show_default=False,
        ),
    ] = None,
    namespace: NamespaceOpt = "local",
    session: SessionOpt = None,
    as_json: JsonOpt = False,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Memories most relevant to QUERY (by meaning with an embedding model, and keywords)."""
    console = Console(highlight=False)
    with _opened(console, config_file, log_level) as (sessions, bank):
        where = MemoryFilter(namespace, session_id=_session_id(sessions, session))
        hits = bank.search(query, where, limit=limit, min_score=_floor(bank, min_score))
    if as_json:
        console.print_json(json.dumps({"mode": bank.mode, "data": [h.as_dict() for h in hits]}))
        return
    if not hits:
        console.print(f"Nothing remembered about that ({bank.mode} search).")
        return
    console.print(_table([(hit.record, hit.score) for hit in hits]))
    console.print(f"[dim]{bank.mode} search[/dim]")


@memory_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1, max=SQLITE_MAX_INT, help="Memories at most.")] = 50,
    namespace: NamespaceOpt = "local",
    session: SessionOpt = None,
    as_json: JsonOpt = False,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Memories, newest first, with a count per namespace."""
    console = Console(highlight=False)
    with _opened(console, config_file, log_level, embed=False) as (sessions, bank):
        where = MemoryFilter(namespace, session_id=_session_id(sessions, session))
        records = bank.store.recent(where, limit=limit)
        namespaces = bank.store.all_namespaces()
    if as_json:
        console.print_json(json.dumps([memory_json(record) for record in records]))
        return
    if not records:
        console.print(f"No memories in namespace {escape(namespace)}.")
    else:
        console.print(_table([(record, None) for record in records]))
    others = sorted(set(namespaces) - {namespace})
    if others:
        console.print(f"[dim]Other namespaces: {escape(', '.join(others))}[/dim]")


@memory_app.command("forget")
def forget_command(
    ids: Annotated[
        list[int] | None, typer.Argument(max=SQLITE_MAX_INT, help="Memory ids to forget.")
    ] = None,
    namespace: NamespaceOpt = "local",
    session: SessionOpt = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Forget every memory of the namespace.")
    ] = False,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Delete memories for good: by id, a whole session's (--session), or all (--all)."""
    console = Console(highlight=False)
    if not ids and session is None and not everything:
        raise fail(console, "say what to forget: memory ids, --session NAME, or --all", 2)
    with _opened(console, config_file, log_level, embed=False) as (sessions, bank):
        if ids:
            forgotten = bank.forget(namespace, ids)
            missing = sorted(set(ids) - {record.id for record in forgotten})
            if missing:
                console.print(
                    f"[yellow]no memory {', '.join(map(str, missing))} in namespace "
                    f"{escape(namespace)}[/yellow]"
                )
        else:
            where = MemoryFilter(namespace, session_id=_session_id(sessions, session))
            forgotten = bank.forget_where(where)
    console.print(f"Forgot {len(forgotten)} memories.")
    if ids and len(forgotten) < len(set(ids)):
        raise typer.Exit(1)  # like rm: asking to delete what is not there is an error


@memory_app.command("reindex")
def reindex_command(config_file: ConfigOpt = None, log_level: LogLevelOpt = None) -> None:
    """Embed every memory with the configured embedding_model (after changing it), and
    remember stored turns that are not remembered yet."""
    console = Console(highlight=False)
    with _opened(console, config_file, log_level) as (_, bank):
        if bank.embedder is None:
            raise fail(console, "no embedding_model is configured: nothing to embed with")
        caught_up = bank.catch_up()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("embedding", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            count = bank.reindex(advance)
    console.print(
        f"Embedded {count} memories with {escape(bank.space or '')}; "
        f"remembered {caught_up} stored messages that were not yet."
    )


@memory_app.command("export")
def export_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace.")
    ] = None,
    config_file: ConfigOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Write memories as JSON (text, role, session, time, importance; not the vectors)."""
    console = Console(highlight=False)
    with _opened(console, config_file, log_level, embed=False) as (_, bank):
        document = bank.export(namespace)
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if output is None:
        typer.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise fail(console, f"cannot write {output}: {exc.strerror or exc}") from None
    console.print(f"Exported {len(document['memories'])} memories to {escape(str(output))}.")
