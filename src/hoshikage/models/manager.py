"""Loaded models: load on first use, keep alive, unload when idle, evict least recently used.

Every server request goes through `ModelManager.use(name)`: the model is loaded off the event
loop if needed (one load at a time, so two loads never overcommit memory together), admitted
if its queue has room, and handed out; when the request ends its keep-alive clock restarts.
A reaper task unloads models whose keep-alive ran out. Before a load, the model's memory is
estimated from its GGUF (weights + KV cache); idle models are evicted, least recently used
first, until it fits the budget, or the request is refused with a clear 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from hoshikage.config import Settings
from hoshikage.engine import Engine, EngineError, EngineUnavailableError
from hoshikage.models.gguf_info import GgufError, estimate_memory_bytes
from hoshikage.runtime import load_options

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 1.0  # how often the reaper looks for engines whose thread has stopped


class ManagerError(Exception):
    """A request the manager cannot serve; `status` is the HTTP status that fits."""

    status = 500


class UnknownModelError(ManagerError):
    status = 404


class OverloadedError(ManagerError):
    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsufficientMemoryError(ManagerError):
    status = 503


class ModelLoadError(ManagerError):
    status = 500


class WrongModelKindError(ManagerError):
    """A chat request for an embedding model, or the other way round."""

    status = 400


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model the server may load."""

    name: str
    path: Path
    embedding: bool = False
    keep_alive_s: float | None = None


Resolver = Callable[[str], ModelSpec]  # raises UnknownModelError


@dataclass
class _Loaded:
    spec: ModelSpec
    engine: Engine
    estimated_bytes: int
    loaded_at: float  # wall clock, for display
    last_used: float  # monotonic
    expires_at: float | None  # monotonic; None = stays loaded
    active: int = 0  # requests holding it (up to one per slot run, the rest wait in line)


@dataclass(frozen=True)
class LoadedModelStatus:
    name: str
    path: str
    size_bytes: int
    estimated_bytes: int
    embedding: bool
    backend: str
    n_ctx: int
    loaded_at: float
    expires_at: float | None  # wall clock
    active: int
    queued: int
    slots: list[tuple[int, bool]]  # per slot: tokens in its KV cache, serving a request


class ModelManager:
    def __init__(self, settings: Settings, resolve: Resolver) -> None:
        self._settings = settings
        self._resolve = resolve
        self._loaded: dict[str, _Loaded] = {}
        self._load_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._wake_reaper = asyncio.Event()
        self._closing = False
        self.loads = 0
        self.unloads = 0
        self.recoveries = 0  # engines replaced after their thread stopped
        # Models whose engine stopped: being reloaded, or whose reload failed (for /health).
        self.failures: dict[str, str] = {}

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="keep-alive reaper")

    async def close(self) -> None:
        # The reaper is asked to stop rather than cancelled: cancelling a task inside
        # wait_for while its event is being set can be swallowed (Python 3.11), hanging here.
        self._closing = True
        self._wake_reaper.set()
        if self._reaper is not None:
            await self._reaper
            self._reaper = None
        for name in list(self._loaded):
            await self._unload(name)

    def resolve(self, name: str) -> ModelSpec:
        """The model a client's name stands for (UnknownModelError if none)."""
        return self._resolve(name)

    def loaded_at(self, name: str) -> float | None:
        """When (wall clock) the model `name` resolves to was loaded; None if it is not."""
        loaded = self._loaded.get(self._resolve(name).name)
        return None if loaded is None else loaded.loaded_at

    # --- the one entry point -------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(
        self, name: str, *, keep_alive: float | None = None, embedding: bool = False
    ) -> AsyncIterator[Engine]:
        """The engine of `name`, loaded if needed; it stays loaded for keep_alive after."""
        spec = self._resolve(name)
        if spec.embedding != embedding:
            kind = "an embedding model" if spec.embedding else "a text generation model"
            raise WrongModelKindError(f"model {name!r} is {kind}")
        loaded = await self._ensure_loaded(spec)
        if not loaded.engine.scheduler.alive:
            loaded = await self._recover(spec)
        slots = loaded.engine.scheduler.n_slots
        if loaded.active >= slots + self._settings.max_queue:
            raise OverloadedError(
                f"model {name!r} is serving {slots} requests with "
                f"{loaded.active - slots} more waiting; try again shortly",
                retry_after_s=1.0,
            )
        loaded.active += 1
        loaded.expires_at = None  # never unload a model in use
        try:
            yield loaded.engine
        finally:
            loaded.active -= 1
            loaded.last_used = time.monotonic()
            self._schedule_expiry(loaded, keep_alive)

    def _schedule_expiry(self, loaded: _Loaded, keep_alive: float | None) -> None:
        if loaded.active:
            return
        seconds = self._keep_alive_for(loaded.spec, keep_alive)
        loaded.expires_at = None if seconds < 0 else time.monotonic() + seconds
        self._wake_reaper.set()

    def _keep_alive_for(self, spec: ModelSpec, requested: float | None) -> float:
        if requested is not None:
            return requested
        if spec.keep_alive_s is not None:
            return spec.keep_alive_s
        return self._settings.keep_alive

    async def unload(self, name: str) -> bool:
        """Unload now (Ollama's keep_alive 0 with no prompt); False if it was not loaded."""
        spec = self._resolve(name)
        loaded = self._loaded.get(spec.name)
        if loaded is None:
            return False
        if loaded.active:
            loaded.expires_at = time.monotonic()  # as soon as the running requests end
            self._wake_reaper.set()
            return True
        await self._unload(spec.name)
        return True

    async def load(self, name: str, *, keep_alive: float | None = None) -> None:
        """Load without a request (Ollama's empty prompt, or a preload)."""
        spec = self._resolve(name)
        loaded = await self._ensure_loaded(spec)
        self._schedule_expiry(loaded, keep_alive)

    async def _recover(self, spec: ModelSpec) -> _Loaded:
        """Replace an engine whose thread stopped with a fresh load of the same model.

        The dead engine has already failed its requests (503). While the reload runs, and if
        it fails, `failures` names the model, so /health and /v1/status can say so.
        """
        dead = self._loaded.get(spec.name)
        if dead is not None and not dead.engine.scheduler.alive:
            reason = dead.engine.scheduler.failure or "the engine thread stopped"
            self.failures[spec.name] = f"reloading: {reason}"
            log.error("model %s: %s; reloading it", spec.name, reason)
            self.recoveries += 1
            await self._unload(spec.name)
        try:
            loaded = await self._ensure_loaded(spec)
        except ManagerError as exc:
            self.failures[spec.name] = f"reload failed: {exc}"
            raise EngineUnavailableError(f"model {spec.name!r} is unavailable: {exc}") from exc
        self.failures.pop(spec.name, None)
        return loaded

    # --- status --------------------------------------------------------------------------
    def status(self) -> list[LoadedModelStatus]:
        now_wall, now = time.time(), time.monotonic()
        return [
            LoadedModelStatus(
                name=name,
                path=str(loaded.spec.path),
                size_bytes=loaded.spec.path.stat().st_size if loaded.spec.path.exists() else 0,
                estimated_bytes=loaded.estimated_bytes,
                embedding=loaded.spec.embedding,
                backend=loaded.engine.info.backend,
                n_ctx=loaded.engine.n_ctx,
                loaded_at=loaded.loaded_at,
                expires_at=None
                if loaded.expires_at is None
                else now_wall + (loaded.expires_at - now),
                active=loaded.active,
                queued=max(loaded.active - loaded.engine.scheduler.n_slots, 0),
                slots=loaded.engine.scheduler.slot_usage(),
            )
            for name, loaded in self._loaded.items()
        ]

    @property
    def memory_budget(self) -> int:
        if self._settings.memory_budget is not None:
            return self._settings.memory_budget
        return int(psutil.virtual_memory().total * 0.9)

    # --- loading and unloading -----------------------------------------------------------
    async def _ensure_loaded(self, spec: ModelSpec) -> _Loaded:
        loaded = self._loaded.get(spec.name)
        if loaded is not None:
            return loaded
        async with self._load_lock:
            loaded = self._loaded.get(spec.name)  # loaded while we waited for the lock
            if loaded is not None:
                return loaded
            options = dataclasses.replace(
                load_options(self._settings),
                embedding=spec.embedding,
                n_ctx=0 if spec.embedding else self._settings.n_ctx,
                parallel=1 if spec.embedding else self._settings.parallel,
            )
            try:
                need = await asyncio.to_thread(
                    estimate_memory_bytes,
                    self._warm_copy_if_present(spec.path),
                    options.n_ctx,
                    options.kv_cache_type,
                    options.parallel,
                )
            except (GgufError, OSError) as exc:
                raise ModelLoadError(f"cannot load model {spec.name!r}: {exc}") from exc
            await self._make_room(spec.name, need)
            path = await asyncio.to_thread(self._warm_copy, spec.path)
            try:
                engine = await asyncio.to_thread(Engine, path, options)
            except EngineError as exc:
                raise ModelLoadError(f"cannot load model {spec.name!r}: {exc}") from exc
            loaded = _Loaded(
                spec=spec,
                engine=engine,
                estimated_bytes=need,
                loaded_at=time.time(),
                last_used=time.monotonic(),
                expires_at=None,
            )
            self._loaded[spec.name] = loaded
            self.failures.pop(spec.name, None)
            self.loads += 1
            log.info("loaded %s in %.2fs", spec.name, engine.info.load_seconds)
            return loaded

    async def _make_room(self, name: str, need: int) -> None:
        budget = self.memory_budget
        if need > budget:
            raise InsufficientMemoryError(
                f"model {name!r} needs about {need / 2**20:.0f} MiB and the memory budget is "
                f"{budget / 2**20:.0f} MiB; use a smaller quantisation or n_ctx, or raise "
                f"memory_budget"
            )
        while (
            len(self._loaded) >= self._settings.max_loaded_models
            or sum(m.estimated_bytes for m in self._loaded.values()) + need > budget
        ):
            idle = [m for m in self._loaded.values() if m.active == 0]
            if not idle:
                raise InsufficientMemoryError(
                    f"no room to load {name!r}: every loaded model is serving requests; "
                    f"try again when they finish"
                )
            victim = min(idle, key=lambda m: m.last_used)
            log.info("evicting %s to make room for %s", victim.spec.name, name)
            await self._unload(victim.spec.name)

    async def _unload(self, name: str) -> None:
        loaded = self._loaded.pop(name, None)
        if loaded is None:
            return
        await asyncio.to_thread(loaded.engine.close)
        self.unloads += 1
        log.info("unloaded %s", name)

    def _warm_copy_if_present(self, path: Path) -> Path:
        """The RAM copy of `path` when one is ready, so that reading its header for the memory
        estimate does not pull the original back from disk."""
        copy = self._ready_copy(path)
        return path if copy is None else copy

    def _warm_copy(self, path: Path) -> Path:
        """With ramdisk_path set, load from a copy kept in RAM so reloads skip the disk."""
        ramdisk = self._settings.ramdisk_path
        if ramdisk is None:
            return path
        copy = self._ready_copy(path)
        if copy is None:
            copy = ramdisk / path.name
            ramdisk.mkdir(parents=True, exist_ok=True)
            partial = copy.with_name(copy.name + ".partial")
            shutil.copyfile(path, partial)
            partial.replace(copy)
            log.info("copied %s to the warm cache %s", path.name, ramdisk)
        return copy

    def _ready_copy(self, path: Path) -> Path | None:
        """The complete copy of `path` in the warm cache, if there is one."""
        ramdisk = self._settings.ramdisk_path
        if ramdisk is None:
            return None
        copy = ramdisk / path.name
        try:
            return copy if copy.stat().st_size == path.stat().st_size else None
        except OSError:
            return None

    async def _reap_forever(self) -> None:
        while not self._closing:
            self._wake_reaper.clear()  # before looking, so no wake-up in between is lost
            for loaded in list(self._loaded.values()):
                if not loaded.engine.scheduler.alive:
                    await self._recover(loaded.spec)
            now = time.monotonic()
            for name, loaded in list(self._loaded.items()):
                expires = loaded.expires_at
                if loaded.active == 0 and expires is not None and expires <= now:
                    await self._unload(name)
            pending = [m.expires_at for m in self._loaded.values() if m.expires_at is not None]
            timeout = max(min(pending) - time.monotonic(), 0.0) if pending else None
            # Look at the engines' health at least this often, even with nothing to expire.
            timeout = HEALTH_CHECK_S if timeout is None else min(timeout, HEALTH_CHECK_S)
            with contextlib.suppress(asyncio.TimeoutError):  # not the builtin on 3.10
                await asyncio.wait_for(self._wake_reaper.wait(), timeout)
