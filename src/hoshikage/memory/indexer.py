"""Remembering off the request path: a thread that indexes stored turns after they commit.

The store is the queue. A turn is committed to `messages` before anyone is told it is done;
the indexer then remembers every message not remembered yet. A turn stored just before a
crash is picked up at the next start, so nothing acknowledged is ever left out of memory, and
no answer ever waits for its turn to be embedded.
"""

from __future__ import annotations

import logging
import threading

from hoshikage.memory.bank import MemoryBank

log = logging.getLogger(__name__)


class MemoryIndexer:
    def __init__(self, bank: MemoryBank) -> None:
        self._bank = bank
        self._wakeup = threading.Condition()
        self._requested = 1  # catch up once at start
        self._done = 0
        self._closing = False
        self.indexed = 0
        self._thread = threading.Thread(target=self._run, name="hoshikage-memory", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New turns were stored: remember them soon."""
        with self._wakeup:
            self._requested += 1
            self._wakeup.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything stored before this call is remembered; False on timeout."""
        with self._wakeup:
            target = self._requested
            return self._wakeup.wait_for(
                lambda: self._done >= target or self._closing, timeout=timeout
            )

    def close(self) -> None:
        with self._wakeup:
            self._closing = True
            self._wakeup.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                self._wakeup.wait_for(lambda: self._requested > self._done or self._closing)
                if self._closing:
                    return
                target = self._requested
            try:
                self.indexed += self._bank.catch_up()
            except Exception as exc:  # never let one failure stop remembering
                log.error("memory indexing failed: %s", exc)
                log.debug("memory indexing failure details", exc_info=True)
            with self._wakeup:
                self._done = target
                self._wakeup.notify_all()
