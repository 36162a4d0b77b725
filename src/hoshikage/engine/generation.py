"""A submitted request as its caller sees it: a stream of events, and a way to cancel."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from hoshikage.engine.types import (
    EngineError,
    EngineUnavailableError,
    ErrorEvent,
    Event,
    FinishEvent,
    TokenEvent,
)


class Generation:
    """Events pushed by the engine thread, read by one consumer: sync (for) or async (async for).

    Iteration yields TokenEvents and ends with the FinishEvent; an engine failure is raised as
    EngineError. The handle must be created on the consumer's event loop to be read async.
    """

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None
        self._async_events: asyncio.Queue[Event] | None
        try:
            self._loop = asyncio.get_running_loop()
            self._async_events = asyncio.Queue()
        except RuntimeError:
            self._loop = None
            self._async_events = None
        self.finish: FinishEvent | None = None
        self.text_parts: list[str] = []
        self._finish_lock = threading.Lock()
        self._pushed_finish: FinishEvent | None = None
        self._on_finish: list[Callable[[FinishEvent], None]] = []

    # --- engine side ---------------------------------------------------------------------
    def push(self, event: Event) -> None:
        if isinstance(event, FinishEvent):
            with self._finish_lock:
                self._pushed_finish = event
                callbacks, self._on_finish = self._on_finish, []
            for callback in callbacks:
                callback(event)
        if self._loop is not None and self._async_events is not None:
            try:
                self._loop.call_soon_threadsafe(self._async_events.put_nowait, event)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                self._cancel.set()
        else:
            self._events.put(event)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    # --- consumer side -------------------------------------------------------------------
    def on_finish(self, callback: Callable[[FinishEvent], None]) -> None:
        """Call `callback` with the FinishEvent when the engine ends this generation, read
        or not (a cancelled one too); at once if it has ended. It runs on the engine's
        thread: it must be quick and thread-safe (a metrics counter, say)."""
        with self._finish_lock:
            finished = self._pushed_finish
            if finished is None:
                self._on_finish.append(callback)
        if finished is not None:
            callback(finished)

    def cancel(self) -> None:
        """Ask the engine to stop; it ends the stream with finish reason 'cancelled'."""
        self._cancel.set()

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def _accept(self, event: Event) -> Event:
        if isinstance(event, ErrorEvent):
            raise (EngineUnavailableError if event.unavailable else EngineError)(event.message)
        if isinstance(event, TokenEvent):
            self.text_parts.append(event.text)
        elif isinstance(event, FinishEvent):
            self.finish = event
        return event

    def __iter__(self) -> Iterator[TokenEvent | FinishEvent]:
        if self._loop is not None:
            raise RuntimeError("this generation was created on an event loop: use 'async for'")
        while self.finish is None:
            try:
                # A timeout keeps the wait interruptible, so Ctrl+C reaches the caller.
                event = self._events.get(timeout=0.1)
            except queue.Empty:
                continue
            accepted = self._accept(event)
            assert not isinstance(accepted, ErrorEvent)
            yield accepted

    async def _aiter(self) -> AsyncIterator[TokenEvent | FinishEvent]:
        if self._async_events is None:
            raise RuntimeError("this generation was created outside an event loop: use 'for'")
        while self.finish is None:
            accepted = self._accept(await self._async_events.get())
            assert not isinstance(accepted, ErrorEvent)
            yield accepted

    def __aiter__(self) -> AsyncIterator[TokenEvent | FinishEvent]:
        return self._aiter()

    async def finished(self) -> FinishEvent:
        """Consume the whole stream (async) and return how it finished."""
        async for _ in self:
            pass
        assert self.finish is not None
        return self.finish

    def wait(self) -> FinishEvent:
        """Consume the whole stream (sync) and return how it finished."""
        for _ in self:
            pass
        assert self.finish is not None
        return self.finish
