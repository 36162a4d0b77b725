"""A live Hoshikage server on 127.0.0.1 (real uvicorn, real socket) for API tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from fastapi import FastAPI

from hoshikage.api import create_app
from hoshikage.api.deps import AppState
from hoshikage.config import Settings, load_settings
from hoshikage.models.synthetic import ModelShape, build_random_model_like


@dataclass
class LiveServer:
    url: str  # e.g. http://127.0.0.1:41234
    app: FastAPI
    settings: Settings

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.hoshikage
        return state


ServerFactory = Callable[..., LiveServer]
OpenAIFactory = Callable[..., openai.OpenAI]


class _Servers:
    """Live servers started with settings overrides, all stopped by stop_all()."""

    def __init__(self, root: Path, model: Path) -> None:
        self._root = root
        self._model = model
        self._running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, **overrides: Any) -> LiveServer:
        config_file = self._root / "config.toml"
        config_file.touch()
        values: dict[str, Any] = {
            "config_file": config_file,
            "data_dir": self._root / f"data{len(self._running)}",
            "log_dir": self._root / "logs",
            "model": str(self._model),
            "n_ctx": 512,
            "n_threads": 1,
        }
        values.update(overrides)
        settings = load_settings(**values)
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self._running.append((server, thread))
        return LiveServer(url=f"http://127.0.0.1:{port}", app=app, settings=settings)

    def stop_all(self) -> None:
        for server, _ in self._running:
            server.should_exit = True
        for _, thread in self._running:
            thread.join(timeout=30)


@pytest.fixture
def server_factory(tmp_path: Path, stories_model: Path) -> Iterator[ServerFactory]:
    """Start servers with settings overrides; all are stopped at the end of the test."""
    servers = _Servers(tmp_path, stories_model)
    yield servers.start
    servers.stop_all()


@pytest.fixture(scope="module")
def module_server_factory(
    tmp_path_factory: pytest.TempPathFactory, stories_model: Path
) -> Iterator[ServerFactory]:
    """Like server_factory, but the servers serve a whole test module (start once, share)."""
    servers = _Servers(tmp_path_factory.mktemp("servers"), stories_model)
    yield servers.start
    servers.stop_all()


# About 42 MB of F16 weights: big enough for its memory to show in the process's RSS, and
# slow enough (~150 tokens/s on one thread) for a long answer to be interrupted mid-way.
RANDOM_SHAPE = ModelShape("llama", 2, 512, 8, 8, 1024, 2048, 10000.0, 1e-5, True)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory, vocab_dir: Path) -> Path:
    """A random-weight llama ('random' when served) with the Llama-2 tokenizer; no template."""
    path = tmp_path_factory.mktemp("random") / "random.gguf"
    return build_random_model_like(path, vocab_dir / "ggml-vocab-llama-spm.gguf", RANDOM_SHAPE)


@pytest.fixture
def live_server(server_factory: ServerFactory) -> LiveServer:
    """A server whose model 'stories260K' is the real trained tiny llama (no auth)."""
    return server_factory()


@pytest.fixture
def openai_client() -> Iterator[OpenAIFactory]:
    """The official client pointed at a server, closed after the test (no leaked sockets).

    No retries, so errors surface at once."""
    opened: list[openai.OpenAI] = []

    def make(server: LiveServer, api_key: str = "x", **options: Any) -> openai.OpenAI:
        api = openai.OpenAI(
            base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=60, **options
        )
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.close()
