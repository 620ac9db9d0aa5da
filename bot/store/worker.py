"""One thread that runs blocking calls for the event loop, in order and in batches.

Every call crosses into the thread and back, and each crossing wakes the other side.
When many conversations ask at once those wake-ups, not the SQL, were most of the
cost (bench/engine.py's bursts), so the thread takes every call already waiting, runs
them in arrival order, and hands all their results back to the loop in one wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
HAND_BACK_EVERY_S = 0.001

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class SerialWorker:
    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        # A daemon: a process that exits without closing the store must not hang on it.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return await future

    def close(self) -> None:
        """Finish the calls already queued, then end the thread."""
        if not self._closed:
            self._closed = True
            self._calls.put(None)

    def _serve(self) -> None:
        while True:
            batch = [self._calls.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._calls.get_nowait())
            done: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            handed_at = time.perf_counter()
            for call in batch:
                if call is None:
                    continue
                loop, future, fn, args = call
                try:
                    outcome: _Outcome = (future, fn(*args), None)
                except BaseException as exc:  # handed to the caller, raised there
                    outcome = (future, None, exc)
                done.setdefault(loop, []).append(outcome)
                # Results go back after each millisecond of work, so a caller early in a
                # long batch does not wait for all of it (one wake-up per call was slower).
                if time.perf_counter() - handed_at > HAND_BACK_EVERY_S:
                    _hand_back(done)
                    done, handed_at = {}, time.perf_counter()
            _hand_back(done)
            if None in batch:
                return


def _hand_back(done: dict[asyncio.AbstractEventLoop, list[_Outcome]]) -> None:
    for loop, outcomes in done.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
