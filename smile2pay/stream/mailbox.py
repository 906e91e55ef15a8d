"""A one-slot "latest frame wins" mailbox served by one worker thread (``StreamSession.offer``).

A frame put while another is waiting replaces it (``put`` returns True: the caller counts it as skipped), so
nothing queues behind a slow pipeline. The worker calls ``handle(item)`` for each frame it takes, in order,
until the mailbox is closed or ``stopped()`` (e.g. the session is final). ``cond`` is the condition the
owner also uses for its own state (a re-entrant lock): what it sets under it is seen by ``put`` callers.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Mailbox:
    def __init__(self, handle: Callable[[Any], None], stopped: Callable[[], bool] = lambda: False,
                 name: str = "smile2pay-stream") -> None:
        self.cond = threading.Condition()
        self._handle = handle
        self._stopped = stopped
        self._name = name
        self._slot: Any = None
        self._worker: threading.Thread | None = None
        self.closed = False

    @property
    def started(self) -> bool:
        return self._worker is not None

    def put(self, item: Any) -> bool:
        """Leave ``item`` for the worker (started on the first put); True when it replaced a waiting one."""
        with self.cond:
            replaced = self._slot is not None
            self._slot = item
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._worker.start()
            self.cond.notify_all()
        return replaced

    def drain(self) -> None:
        """Wait until the waiting item (if any) has been taken, the mailbox is closed or the owner stopped."""
        if self._worker is None:
            return
        with self.cond:
            while self._slot is not None and not self._stopped() and not self.closed:
                self.cond.wait(0.5)

    def wait_for(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Block until ``done()`` (checked whenever the condition is notified) or ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not done():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.cond.wait(left)

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def close(self) -> None:
        """Drop the waiting item and stop the worker (joined unless called from it)."""
        with self.cond:
            self.closed = True
            self._slot = None
            self.cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self.cond:
                while self._slot is None and not self.closed and not self._stopped():
                    self.cond.wait(0.5)
                if self.closed or self._stopped():
                    self.cond.notify_all()
                    return
                item, self._slot = self._slot, None
            self._handle(item)
            with self.cond:
                self.cond.notify_all()
