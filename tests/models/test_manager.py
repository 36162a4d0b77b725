"""ModelManager with real models: load on demand, keep-alive, eviction, admission."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hoshikage.config import load_settings
from hoshikage.engine import SamplingParams
from hoshikage.models.manager import (
    InsufficientMemoryError,
    ModelManager,
    ModelSpec,
    OverloadedError,
    UnknownModelError,
    WrongModelKindError,
)


def make_manager(tmp_path: Path, models: dict[str, ModelSpec], **overrides: Any) -> ModelManager:
    config = tmp_path / "config.toml"
    config.touch()
    settings = load_settings(config_file=config, data_dir=tmp_path, n_ctx=256, **overrides)

    def resolve(name: str) -> ModelSpec:
        if name not in models:
            raise UnknownModelError(f"model {name!r} not found")
        return models[name]

    return ModelManager(settings, resolve)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


@pytest.fixture
def three_models(tmp_path: Path, stories_model: Path) -> dict[str, ModelSpec]:
    """Three names for copies of stories260K (different files, as different models are)."""
    specs = {}
    for name in ("a", "b", "c"):
        copy = tmp_path / f"{name}.gguf"
        shutil.copyfile(stories_model, copy)
        specs[name] = ModelSpec(name=name, path=copy)
    return specs


def test_loads_on_first_use_and_serves(tmp_path: Path, three_models: dict[str, ModelSpec]) -> None:
    async def scenario() -> None:
        manager = make_manager(tmp_path, three_models)
        await manager.start()
        assert manager.status() == []
        async with manager.use("a") as engine:
            generation = engine.complete("Once upon a time", SamplingParams(max_tokens=4))
            finish = await generation.finished()
            assert finish.usage.completion_tokens == 4
            assert [s.active for s in manager.status()] == [1]
        status = manager.status()
        assert [s.name for s in status] == ["a"] and status[0].expires_at is not None
        assert manager.loads == 1
        await manager.close()
        assert manager.status() == [] and manager.unloads == 1

    run(scenario)


def test_keep_alive_unloads_and_next_use_reloads(
    tmp_path: Path, three_models: dict[str, ModelSpec]
) -> None:
    async def scenario() -> None:
        manager = make_manager(tmp_path, three_models)
        await manager.start()
        async with manager.use("a", keep_alive=0.3):
            pass
        assert manager.status()
        await asyncio.sleep(0.8)
        assert manager.status() == []  # the reaper unloaded it
        async with manager.use("a", keep_alive=0):
            pass
        await asyncio.sleep(0.2)
        assert manager.status() == []  # keep_alive 0: unloaded right after
        async with manager.use("a", keep_alive=-1):
            pass
        assert manager.status()[0].expires_at is None  # negative: stays loaded
        assert manager.loads == 3
        await manager.close()

    run(scenario)


def test_least_recently_used_idle_model_is_evicted(
    tmp_path: Path, three_models: dict[str, ModelSpec]
) -> None:
    async def scenario() -> None:
        manager = make_manager(tmp_path, three_models, max_loaded_models=2)
        await manager.start()
        for name in ("a", "b", "a"):
            async with manager.use(name):
                pass
        async with manager.use("c"):  # b was used least recently
            assert sorted(s.name for s in manager.status()) == ["a", "c"]
        await manager.close()

    run(scenario)


def test_memory_budget_evicts_then_refuses(
    tmp_path: Path, three_models: dict[str, ModelSpec]
) -> None:
    async def scenario() -> None:
        one_model = 2 * 1024 * 1024  # stories260K with a 256-token window is ~1.4 MB
        manager = make_manager(tmp_path, three_models, memory_budget=one_model)
        await manager.start()
        async with manager.use("a"):
            # b cannot fit beside a, and a is busy: refused, not crashed.
            with pytest.raises(InsufficientMemoryError, match="serving requests"):
                async with manager.use("b"):
                    pass
        async with manager.use("b"):  # a is idle now: evicted to make room
            assert [s.name for s in manager.status()] == ["b"]
        await manager.close()
        tiny = make_manager(tmp_path, three_models, memory_budget=1024)
        with pytest.raises(InsufficientMemoryError, match="memory budget"):
            async with tiny.use("a"):
                pass

    run(scenario)


def test_queue_limit_and_kinds(tmp_path: Path, three_models: dict[str, ModelSpec]) -> None:
    async def scenario() -> None:
        models = {**three_models, "e": ModelSpec("e", three_models["a"].path, embedding=True)}
        manager = make_manager(tmp_path, models, max_queue=1, parallel=1)
        await manager.start()
        async with manager.use("a"), manager.use("a"):  # one running, one waiting
            with pytest.raises(OverloadedError) as refused:
                async with manager.use("a"):
                    pass
            assert refused.value.retry_after_s > 0
        with pytest.raises(UnknownModelError):
            async with manager.use("nope"):
                pass
        with pytest.raises(WrongModelKindError):
            async with manager.use("a", embedding=True):
                pass
        await manager.close()

    run(scenario)


def test_concurrent_first_requests_load_once(
    tmp_path: Path, three_models: dict[str, ModelSpec]
) -> None:
    async def scenario() -> None:
        manager = make_manager(tmp_path, three_models)
        await manager.start()

        async def use() -> None:
            async with manager.use("a"):
                await asyncio.sleep(0.05)

        await asyncio.gather(*(use() for _ in range(4)))
        assert manager.loads == 1
        await manager.close()

    run(scenario)


def test_warm_cache_copy_is_used_for_loading(
    tmp_path: Path, three_models: dict[str, ModelSpec]
) -> None:
    async def scenario() -> None:
        ramdisk = tmp_path / "ram"
        manager = make_manager(tmp_path, three_models, ramdisk_path=ramdisk)
        await manager.start()
        async with manager.use("a") as engine:
            assert Path(engine.info.path) == ramdisk / "a.gguf"
        assert (ramdisk / "a.gguf").stat().st_size == three_models["a"].path.stat().st_size
        await manager.close()

    run(scenario)
