"""The proxy's admission gate: a resizable, pausable, holdable limit with a fair, bounded queue.

- First come, first served: a freed slot is handed to the oldest waiter, never to a newcomer
  that happens to arrive at that moment (the asyncio limiter of the harness helper re-checks on
  wake-up, so a burst could overtake; a proxy serving many clients must not let one starve).
- Never drops a waiting request: beyond `max_queue` waiters a new one is refused at once
  (QueueFull: the proxy answers 503 with a clear message), which bounds memory.
- `pause()` and holds (a recovery in progress) stop admissions; work in flight continues.
- `probe()` after a hold: one request at a time until `probe_answered()` (the runner answers
  again), then the full limit.

It implements the control channel's Limiter protocol (limit, paused, in_flight, completed,
set_limit, pause, resume), so `RunnerControl` drives it like a harness's limiter. Those calls come
from the control poller's thread: state is guarded by a lock and waiters are woken on their own
event loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from oasis_ops.errors import UsageError


class QueueFull(Exception):
    """The queue holds `max_queue` requests already."""


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FairGate:
    def __init__(self, limit: int, *, max_queue: int = 1024) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"concurrency limit must be an integer >= 1, got {limit!r}")
        self._limit = limit
        self.max_queue = max_queue
        self._paused = False
        self._hold: str | None = None  # why admissions are held (a recovery), or None
        self._probing = False  # after a hold: one at a time until the runner answers
        self._in_flight = 0
        self._completed = 0
        self._admitted = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._granted: set[asyncio.Future[None]] = set()  # handed a slot, not yet resumed
        self._lock = threading.Lock()

    # --- the Limiter protocol ---------------------------------------------------------------------
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

    def set_limit(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"concurrency limit must be an integer >= 1, got {limit!r}")
        with self._lock:
            self._limit = limit
            self._dispatch()

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._dispatch()

    # --- holds (recovery) ---------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def admitted(self) -> int:
        """Requests let through so far (for the probe: has one gone since it began?)."""
        return self._admitted

    @property
    def hold_reason(self) -> str | None:
        return self._hold

    @property
    def probing(self) -> bool:
        return self._probing

    def hold(self, reason: str) -> None:
        with self._lock:
            self._hold = reason
            self._probing = False

    def probe(self) -> None:
        """End the hold, but admit one request at a time until probe_answered()."""
        with self._lock:
            self._hold = None
            self._probing = True
            self._dispatch()

    def probe_answered(self) -> None:
        with self._lock:
            if self._probing:
                self._probing = False
                self._dispatch()

    def release_hold(self) -> None:
        with self._lock:
            self._hold = None
            self._probing = False
            self._dispatch()

    # --- entering and leaving -------------------------------------------------------------------
    def _open(self) -> bool:
        limit = 1 if self._probing else self._limit
        return not self._paused and self._hold is None and self._in_flight < limit

    def _dispatch(self) -> None:
        """Hand free slots to the oldest waiters (call with the lock held)."""
        while self._waiters and self._open():
            future = self._waiters.popleft()
            if future.done():  # cancelled while queued
                continue
            try:
                future.get_loop().call_soon_threadsafe(_grant, future)
            except RuntimeError:  # its loop is closed: nobody waits on it any more
                continue
            self._in_flight += 1
            self._admitted += 1
            self._granted.add(future)

    async def enter(self) -> None:
        """Wait for a slot (FIFO). QueueFull at once when the queue is full."""
        with self._lock:
            if not self._waiters and self._open():
                self._in_flight += 1
                self._admitted += 1
                return
            if len(self._waiters) >= self.max_queue:
                raise QueueFull(f"{len(self._waiters)} requests are already waiting (limit {self.max_queue})")
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if future in self._waiters:
                    self._waiters.remove(future)
                elif future in self._granted:  # a slot was handed to us: give it back
                    self._granted.discard(future)
                    self._in_flight -= 1
                    self._admitted -= 1
                    self._dispatch()
            raise
        with self._lock:
            self._granted.discard(future)

    def leave(self) -> None:
        with self._lock:
            if self._in_flight <= 0:
                raise UsageError("FairGate.leave() called more often than enter()")
            self._in_flight -= 1
            self._completed += 1
            self._dispatch()
