"""The worker thread a blocking strategy runs on."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class _Worker:
    """The one thread a blocking strategy runs on: calls run one at a time, in order.

    The thread is a daemon so a strategy stuck for good can never keep the process from
    exiting; threads cannot be killed, so it is abandoned instead.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = False
        self.busy_since = 0.0
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the thread; the future settles on the loop when it returns."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"strategy-{self.name}", daemon=True)
            self._thread.start()
        self.busy = True
        self.busy_since = time.perf_counter()
        self._jobs.put((loop, fut, fn, args))
        return fut

    async def wait_idle(self) -> None:
        """Until the running call (maybe abandoned) has returned."""
        if not self.busy:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        await fut

    def stop(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fut, fn, args = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting task
                error = exc
            except BaseException as exc:  # noqa: BLE001 - SystemExit & co. must not kill the worker silently
                error = RuntimeError(f"strategy raised {type(exc).__name__}: {exc}")
            try:
                loop.call_soon_threadsafe(self._settle, fut, result, error)
            except RuntimeError:
                return  # the loop is closed: nobody is waiting any more

    def _settle(self, fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.busy = False
        if not fut.done():  # a timed-out call's future was cancelled: its result is discarded
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
