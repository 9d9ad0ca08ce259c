"""Resizable concurrency limiters for a harness's worker pool (threads or asyncio).

Semantics, the same for both:
- `set_limit(n)` takes effect at once for new acquisitions. Shrinking never cancels work in
  flight: `in_flight` may exceed the new limit until those tasks finish on their own.
- `pause()` blocks new acquisitions (work in flight continues); `resume()` lets them through.
- `in_flight` counts acquired and not yet released slots; `completed` counts releases.
Every method that changes the limit may be called from any thread (the control poller runs in
its own thread), including for the asyncio limiter.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType
from typing import Protocol

from oasis_ops.errors import UsageError


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"concurrency limit must be an integer >= 1, got {limit!r} (use pause() to stop new work)")
    return limit


class Limiter(Protocol):
    """What RunnerControl needs from a limiter."""

    @property
    def limit(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def completed(self) -> int: ...
    def set_limit(self, limit: int) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class ResizableLimiter:
    """A semaphore for thread pools whose size can change while work runs.

    `with limiter: do_one_task()`, or acquire()/release().
    """

    def __init__(self, limit: int, *, paused: bool = False) -> None:
        self._limit = _check_limit(limit)
        self._paused = paused
        self._in_flight = 0
        self._completed = 0
        self._waiting = 0
        self._cond = threading.Condition(threading.Lock())

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def completed(self) -> int:
        return self._completed

    @property
    def waiting(self) -> int:
        return self._waiting

    def _free(self) -> bool:
        return not self._paused and self._in_flight < self._limit

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a slot; blocks while paused or full. False when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while not self._free():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._in_flight += 1
                return True
            finally:
                self._waiting -= 1

    def release(self) -> None:
        with self._cond:
            if self._in_flight <= 0:
                raise UsageError("ResizableLimiter.release() called more often than acquire()")
            self._in_flight -= 1
            self._completed += 1
            self._cond.notify()

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = _check_limit(limit)
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def __enter__(self) -> ResizableLimiter:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncResizableLimiter:
    """The asyncio twin of ResizableLimiter: `async with limiter: await one_task()`.

    State is guarded by a threading lock and waiters are woken with call_soon_threadsafe, so
    set_limit/pause/resume work from the control poller's thread too.
    """

    def __init__(self, limit: int, *, paused: bool = False) -> None:
        self._limit = _check_limit(limit)
        self._paused = paused
        self._in_flight = 0
        self._completed = 0
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def completed(self) -> int:
        return self._completed

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if not self._paused and self._in_flight < self._limit:
                    self._in_flight += 1
                    return
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append(future)
            try:
                await future
            except asyncio.CancelledError:
                with self._lock:
                    woken = future not in self._waiters  # popped by _wake_some for us
                    if not woken:
                        self._waiters.remove(future)
                if woken:  # we were handed a wake-up we will not use: pass it on
                    self._wake_some()
                raise

    def release(self) -> None:
        with self._lock:
            if self._in_flight <= 0:
                raise UsageError("AsyncResizableLimiter.release() called more often than acquire()")
            self._in_flight -= 1
            self._completed += 1
        self._wake_some()

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self._limit = _check_limit(limit)
        self._wake_some()

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
        self._wake_some()

    def _wake_some(self) -> None:
        """Wake as many waiters as there are free slots; each re-checks when it runs."""
        with self._lock:
            free = 0 if self._paused else max(0, self._limit - self._in_flight)
            woken, self._waiters = self._waiters[:free], self._waiters[free:]
        for future in woken:
            try:
                future.get_loop().call_soon_threadsafe(_wake, future)
            except RuntimeError:  # its loop is closed: nobody is waiting on it any more
                pass

    async def __aenter__(self) -> AsyncResizableLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
