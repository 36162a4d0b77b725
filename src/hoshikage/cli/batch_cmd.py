"""`hoshikage batch`: many prompts through the batching scheduler, results in input order.

Each input line is a JSON object: {"prompt": "..."} for a completion or {"messages": [...]}
for a chat, with optional "id" and per-line sampling fields (max_tokens, temperature, top_p,
top_k, seed, stop). Each output line answers the input line of the same number; a bad line
gets {"line": N, "error": "..."} and the rest go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from hoshikage.cli.app import ConfigOpt, LogLevelOpt, ModelOpt, ThreadsOpt, fail
from hoshikage.engine import ChatMessage, Engine, EngineError, Generation, SamplingParams

log = logging.getLogger(__name__)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class BatchLine(BaseModel):
    """One input line; unknown fields are refused so that typos are reported, not ignored."""

    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    prompt: str | None = None
    messages: list[_Message] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0)
    stop: list[str] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> BatchLine:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        return self

    def sampling(self, defaults: SamplingParams) -> SamplingParams:
        given = {
            key: value
            for key in ("max_tokens", "temperature", "top_p", "top_k", "seed")
            if (value := getattr(self, key)) is not None
        }
        if self.stop is not None:
            given["stop"] = tuple(self.stop)
        return dataclasses.replace(defaults, **given)


def parse_line(text: str) -> BatchLine:
    try:
        return BatchLine.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except ValidationError as exc:
        raise ValueError(
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors()
            )
        ) from None


def _submit(engine: Engine, line: BatchLine, defaults: SamplingParams) -> Generation:
    params = line.sampling(defaults)
    if line.messages is not None:
        messages = [ChatMessage(m.role, m.content) for m in line.messages]
        return engine.chat(messages, params)
    assert line.prompt is not None
    return engine.complete(line.prompt, params)


def batch(
    input_file: Annotated[Path, typer.Argument(help="JSONL: one prompt or chat per line.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL results, input order.")],
    model: ModelOpt = None,
    config_file: ConfigOpt = None,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Prompts decoded together.")] = 4,
    n_ctx: Annotated[
        int | None, typer.Option("--n-ctx", "-c", help="Context window per prompt.")
    ] = None,
    n_threads: ThreadsOpt = None,
    temperature: Annotated[float | None, typer.Option(help="Default temperature.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Default most tokens per answer.")] = None,
    seed: Annotated[int | None, typer.Option(help="Default sampling seed.")] = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run many prompts concurrently through the batching scheduler, with a progress bar."""
    from hoshikage.cli.app import settings_from_flags
    from hoshikage.runtime import load_options, resolve_model, sampling_defaults

    console = Console(highlight=False, stderr=True)
    settings = settings_from_flags(console, dict(locals()))
    try:
        lines = input_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(console, f"cannot read {input_file}: {exc}") from None
    defaults = sampling_defaults(settings)
    if defaults.max_tokens is None:
        defaults = dataclasses.replace(defaults, max_tokens=256)  # a batch must end
    try:
        path = resolve_model(settings.model, settings)
        options = dataclasses.replace(load_options(settings), parallel=parallel)
        with console.status(f"Loading {path.name}…"):
            engine = Engine(path, options)
    except EngineError as exc:
        raise fail(console, str(exc)) from None
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, BatchLine, Generation | None, str | None]] = []
    with engine:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                line = parse_line(text)
                pending.append((number, line, _submit(engine, line, defaults), None))
            except (ValueError, EngineError) as exc:
                pending.append((number, BatchLine.model_construct(), None, str(exc)))
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        with progress:
            task = progress.add_task("prompts", total=len(pending))
            for number, line, generation, error in pending:
                results.append(_result(number, line, generation, error))
                progress.advance(task)
    _write(output, results)
    failed = [r for r in results if "error" in r]
    for result in failed:
        console.print(f"[yellow]line {result['line']}: {result['error']}[/yellow]")
    console.print(
        f"{len(results) - len(failed)} of {len(results)} prompts answered; results in {output}"
    )
    if failed and len(failed) == len(results):
        raise typer.Exit(1)


def _result(
    number: int, line: BatchLine, generation: Generation | None, error: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"line": number}
    if line.id is not None:
        result["id"] = line.id
    if generation is None:
        return {**result, "error": error}
    try:
        finish = generation.wait()
    except EngineError as exc:
        return {**result, "error": str(exc)}
    return {
        **result,
        "text": generation.text,
        "finish_reason": finish.finish_reason,
        "usage": {
            "prompt_tokens": finish.usage.prompt_tokens,
            "completion_tokens": finish.usage.completion_tokens,
        },
        "time_to_first_token_s": round(finish.timings.time_to_first_token_s, 4),
    }


def _write(path: Path, results: list[dict[str, Any]]) -> None:
    """Atomically, so an interrupted run never leaves a half-written results file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(result, ensure_ascii=False) + "\n")
    partial.replace(path)
