"""`hoshikage serve`: the OpenAI- and Ollama-compatible server, on uvicorn.

Registered in cli/app.py with `app.command()(serve)`. The CLI app is imported only when the
command runs, so either module may be imported first.

Shutdown (Ctrl+C, SIGTERM) is graceful: no new connections are accepted, requests in progress
get `--shutdown-grace` seconds to finish; after that their generations are cancelled, so
every stream still ends with a final chunk and `[DONE]` (and a session's turn is stored whole
or not at all) rather than being cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from hoshikage import __version__
from hoshikage.cli.options import EmbeddingModelOpt, MemoryOpt

if TYPE_CHECKING:
    from hoshikage.api.app import AppState

log = logging.getLogger(__name__)

# Each option sets the setting of the same name (see `Settings`); not given, the environment
# and the settings file decide.
HostOpt = Annotated[
    str | None,
    typer.Option(
        help="Address to bind (default 127.0.0.1: this machine only).", show_default=False
    ),
]
PortOpt = Annotated[
    int | None, typer.Option(help="Port (default 8000; 0 picks a free one).", show_default=False)
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Model to serve besides the registered ones.", show_default=False
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", show_default=False)
]
ApiKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--api-key",
        help="Accept this Bearer key (repeatable); with none, no auth.",
        show_default=False,
    ),
]
AdminKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--admin-api-key",
        help="Accept this Bearer key for model management too: pull, delete, copy, unload "
        "(repeatable).",
        show_default=False,
    ),
]
ApiKeyFileOpt = Annotated[
    Path | None, typer.Option(help="File with one API key per line.", show_default=False)
]
CorsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--cors-origin",
        help="Browser origin allowed to call the API (repeatable).",
        show_default=False,
    ),
]
KeepAliveOpt = Annotated[
    str | None,
    typer.Option(
        help="How long a model stays loaded after its last request: 300, 5m, 1h; -1 = always.",
        show_default=False,
    ),
]
LogLevelOpt = Annotated[
    str | None, typer.Option(help="trace, debug, info, warn or error.", show_default=False)
]


def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    model: ModelOpt = None,
    config_file: ConfigOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    admin_api_key: AdminKeyOpt = None,
    cors_origin: CorsOpt = None,
    keep_alive: KeepAliveOpt = None,
    max_loaded_models: Annotated[
        int | None, typer.Option(help="Models loaded at once, at most.", show_default=False)
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option(
            help="Requests per model decoded together (continuous batching; default 4).",
            show_default=False,
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(help="Requests that may wait per model (429 beyond).", show_default=False),
    ] = None,
    memory_budget: Annotated[
        int | None,
        typer.Option(help="Bytes loaded models may use (default: 90% of RAM).", show_default=False),
    ] = None,
    context_overflow: Annotated[
        str | None,
        typer.Option(
            help="Prompt too long: drop (oldest turns, reported) or error (400).",
            show_default=False,
        ),
    ] = None,
    ramdisk_path: Annotated[
        Path | None,
        typer.Option(
            help="RAM-backed directory for fast reloads after idle unload.", show_default=False
        ),
    ] = None,
    embedding_model: EmbeddingModelOpt = None,
    memory: MemoryOpt = None,
    backend: Annotated[
        str | None,
        typer.Option(help="auto, cpu, cuda, metal, vulkan or hybrid.", show_default=False),
    ] = None,
    gpu_layers: Annotated[
        int | None,
        typer.Option(help="Layers to offload to the GPU (-1 = all).", show_default=False),
    ] = None,
    n_ctx: Annotated[
        int | None,
        typer.Option(
            "--n-ctx", "--ctx-size", "-c", help="Context window in tokens.", show_default=False
        ),
    ] = None,
    n_threads: Annotated[
        int | None, typer.Option("--threads", "-t", help="CPU threads.", show_default=False)
    ] = None,
    flash_attn: Annotated[
        str | None, typer.Option("--flash-attn", help="auto, on or off.", show_default=False)
    ] = None,
    kv_cache_type: Annotated[
        str | None,
        typer.Option("--kv-cache-type", help="f16, q8_0, q4_0 …", show_default=False),
    ] = None,
    chat_template: Annotated[
        str | None,
        typer.Option(
            help="Chat template: plain, transcript, chatml or Jinja text.", show_default=False
        ),
    ] = None,
    log_level: LogLevelOpt = None,
    shutdown_grace: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds running requests may take to finish at shutdown."),
    ] = 10.0,
) -> None:
    """Serve models over HTTP: the OpenAI API under /v1, Ollama's under /api, docs at /docs."""
    flags: dict[str, Any] = dict(locals())  # parameters are named after their settings
    from hoshikage.api import create_app
    from hoshikage.cli.app import fail, settings_from_flags, with_default_model
    from hoshikage.store import StoreError

    console = Console(highlight=False)
    flags["api_keys"] = api_key or None
    flags["admin_api_keys"] = admin_api_key or None
    flags["cors_origins"] = cors_origin or None
    settings = settings_from_flags(console, flags)
    # Nothing to serve at all: the starter model (served as STARTER_NAME), or exit 1 saying
    # how to get a model. Registered models and aliases are served as they are.
    settings = with_default_model(console, settings)
    _configure_uvicorn_logging(settings.log_level)
    try:
        app = create_app(settings)
    except (ValueError, StoreError) as exc:
        raise fail(console, str(exc)) from None
    state: AppState = app.state.hoshikage
    if not state.api_keys and not is_loopback(settings.host):
        console.print(
            f"[yellow]warning:[/yellow] listening on {escape(settings.host)} without an API "
            "key: anyone who can reach this machine can use the models and read the sessions. "
            "Set --api-key or api_key_file, or bind 127.0.0.1.",
            soft_wrap=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # our logging setup, not uvicorn's
            access_log=settings.log_level in ("trace", "debug", "info"),
            server_header=False,
            lifespan="on",
            # A backstop only: _serve_until_stopped ends running requests after the grace.
            timeout_graceful_shutdown=int(shutdown_grace) + 10,
        )
    )
    previous = signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        started = asyncio.run(_serve_until_stopped(server, state, console, shutdown_grace))
    except KeyboardInterrupt:
        started = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not started:
        raise fail(console, f"could not serve on {settings.host}:{settings.port} (see above)")
    console.print("[dim]Hoshikage stopped.[/dim]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public address


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal that stopped it once it is done; by then all is closed.
    raise KeyboardInterrupt


async def _serve_until_stopped(
    server: uvicorn.Server, state: AppState, console: Console, grace: float
) -> bool:
    """Serve until a signal stops the server; False if it could not start."""

    async def run_server() -> None:
        # uvicorn exits when it cannot bind, and re-raises the signal that stopped it once
        # all is closed: caught here, so the task ends cleanly instead of holding an
        # exception nobody retrieves ("Task exception was never retrieved" on every SIGTERM).
        with contextlib.suppress(SystemExit, KeyboardInterrupt):
            await server.serve()

    serving = asyncio.create_task(run_server())
    while not server.started:
        if serving.done():
            return False  # uvicorn logged why
        await asyncio.sleep(0.05)
    settings = state.settings
    port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{shown_host}:{port}"
    console.print(
        f"Hoshikage {__version__} listening on {url} — OpenAI API at {url}/v1, "
        f"Ollama API at {url}/api, docs at {url}/docs"
        + (" (API key required)" if state.api_keys else ""),
        soft_wrap=True,  # one line, so that scripts can read the address
    )
    while not serving.done():
        if server.should_exit:
            done, _ = await asyncio.wait({serving}, timeout=grace)
            if not done and state.service.in_flight:
                log.warning(
                    "shutting down: ending %d requests still running after %.0fs",
                    state.service.in_flight,
                    grace,
                )
                # Closing the engines cancels their generations: each stream still gets a
                # final chunk and [DONE], and nothing half-written reaches the store.
                await state.manager.close()
            break
        await asyncio.wait({serving}, timeout=0.1)
    await serving
    return True


def _configure_uvicorn_logging(level: str) -> None:
    """uvicorn's messages through the same console format as ours, at the same level."""
    from hoshikage.logging_setup import LEVELS

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name == "uvicorn" else []
        logger.propagate = name != "uvicorn"
        logger.setLevel(LEVELS[level])
