"""The SQLite store's worker thread: order, errors and cancellation under a burst."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bot.store.worker import SerialWorker


@pytest.fixture
def worker():
    w = SerialWorker("test-worker")
    yield w
    w.close()


async def test_calls_run_on_one_thread_in_arrival_order(worker):
    seen: list[tuple[int, str]] = []

    def work(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    results = await asyncio.gather(*(worker.run(work, n) for n in range(200)))
    assert results == [n * n for n in range(200)]
    assert [n for n, _ in seen] == list(range(200))
    assert {name for _, name in seen} == {"test-worker"}


async def test_an_error_reaches_only_its_own_caller(worker):
    def work(n: int) -> int:
        if n == 3:
            raise ValueError("bad row 3")
        return n

    results = await asyncio.gather(*(worker.run(work, n) for n in range(6)), return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad row 3"


async def test_a_cancelled_caller_leaves_the_others_answered(worker):
    gate = threading.Event()

    def blocked() -> str:
        gate.wait(5)
        return "blocked"

    first = asyncio.create_task(worker.run(blocked))
    cancelled = asyncio.create_task(worker.run(lambda: "never read"))
    last = asyncio.create_task(worker.run(lambda: "last"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    gate.set()
    assert await first == "blocked"
    assert await last == "last"
    assert cancelled.cancelled()


async def test_queued_calls_finish_and_later_ones_are_refused_after_close():
    worker = SerialWorker("closing-worker")
    pending = [asyncio.create_task(worker.run(lambda n=n: n)) for n in range(5)]
    await asyncio.sleep(0)  # let the tasks queue their calls
    worker.close()
    assert await asyncio.gather(*pending) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="closed"):
        await worker.run(lambda: 1)
    worker._thread.join(2)
    assert not worker._thread.is_alive()


async def test_a_long_batch_hands_results_back_as_it_goes(worker):
    gate = threading.Event()
    slow_done = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        slow_done.set()
        return "slow"

    blocker = asyncio.create_task(worker.run(gate.wait, 5))
    await asyncio.sleep(0.01)  # the worker is inside `blocker`; the next calls queue up
    quick = asyncio.create_task(worker.run(lambda: "quick"))
    medium = asyncio.create_task(worker.run(time.sleep, 0.005))
    later = asyncio.create_task(worker.run(slow))
    await asyncio.sleep(0.01)
    gate.set()  # the worker takes quick, medium and slow as one batch
    assert await quick == "quick"
    assert await medium is None
    assert not slow_done.is_set()  # both came back while `slow` was still running
    assert await later == "slow"
    assert await blocker is True
