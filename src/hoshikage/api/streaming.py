"""What every generating route needs, whatever its wire format: a run that is closed exactly
once however the request ends, and a client that may leave at any moment.

A route opens the service's run *before* answering, and waits for the first event: an unknown
model, a full queue, a context overflow or a grammar the engine refuses are then proper HTTP
errors, not an error inside a 200 stream. While it waits — and while it streams — a client
that disconnects cancels the generation, so the engine is free for the next request within a
step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TypeVar

import anyio
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from hoshikage.api.service import TurnRun
from hoshikage.turns.vocabulary import TurnEvent, TurnFinished

log = logging.getLogger(__name__)

T = TypeVar("T")

# nginx's "client closed request": what the log and the metrics record for a client that left
# before its answer; nobody receives it.
CLIENT_CLOSED_REQUEST = 499


def client_gone() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _disconnected(request: Request) -> None:
    # The body has been read already, so the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_or_disconnect(request: Request, awaitable: Awaitable[T]) -> T | None:
    """The awaitable's result, or None as soon as the client disconnects (it is cancelled)."""

    async def work_on() -> T:
        return await awaitable

    work = asyncio.create_task(work_on())
    watch = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending = [task for task in (work, watch) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    if work.cancelled():
        return None
    return work.result()


class OpenedRun:
    """A service run opened by a route, its first engine event already read.

    `close()` ends the service's context (cancelling an unfinished generation, storing a
    finished session turn); it runs once, whether the route, the stream or a disconnect
    gets there first.
    """

    def __init__(self, runs: list[TurnRun], stack: AsyncExitStack) -> None:
        self.runs = runs  # several: the choices of one prompt (OpenAI's `n`)
        self.run = runs[0]
        self._stack = stack
        self._closed = False

    @classmethod
    async def open(
        cls,
        request: Request,
        context: AbstractAsyncContextManager[TurnRun] | AbstractAsyncContextManager[list[TurnRun]],
    ) -> OpenedRun | None:
        """Enter `context` and read the first event of each run; None if the client left
        meanwhile."""
        stack = AsyncExitStack()
        try:
            entered: TurnRun | list[TurnRun] = await stack.enter_async_context(context)
            runs = entered if isinstance(entered, list) else [entered]
            started = await wait_or_disconnect(request, _started(runs))
        except BaseException:
            await stack.aclose()
            raise
        if started is None:
            await stack.aclose()
            return None
        return cls(runs, stack)

    def events(self) -> AsyncIterator[TurnEvent]:
        """The turn's events; the last is its TurnFinished."""
        return self.run.events()

    async def finish(self) -> TurnFinished:
        """Read to the end."""
        return await self.run.finish()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded: this runs while a disconnect is cancelling the response, and must not be
        # cut short (the generation has to be cancelled, a finished turn stored).
        with anyio.CancelScope(shield=True):
            try:
                await self._stack.aclose()
            except Exception:
                log.exception("error while closing a run")


async def _started(runs: list[TurnRun]) -> bool:
    for run in runs:
        await run.start()
    return True


async def merged_events(runs: list[TurnRun]) -> AsyncIterator[tuple[int, TurnEvent]]:
    """The events of several runs as they come, each with its run's index."""
    queue: asyncio.Queue[tuple[int, TurnEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, run: TurnRun) -> None:
        try:
            async for event in run.events():
                await queue.put((index, event))
        except Exception as exc:
            await queue.put((index, exc))
            return
        await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, run)) for i, run in enumerate(runs)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RunStream(StreamingResponse):
    """A streaming response that closes its run (or runs) when the response ends, however
    it ends.

    Starlette cancels the body when the client disconnects (or never starts it); this makes
    sure the body generator is closed and the runs released in every case.
    """

    def __init__(
        self,
        body: AsyncGenerator[str, None],
        *,
        opened: OpenedRun | None = None,
        media_type: str,
        headers: Mapping[str, str] | None = None,
        closing: AsyncExitStack | None = None,  # several runs' closes (several prompts)
    ) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._body = body
        self._opened = opened
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await self._body.aclose()
                if self._opened is not None:
                    await self._opened.close()
                if self._closing is not None:
                    await self._closing.aclose()
