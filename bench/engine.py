"""Engine overhead per turn: everything but waiting for the model.

The model is an in-process client that answers instantly, so each measured turn is
the engine's own work: de-duplication, storing the question, the conversation lock,
settings, the context window, prompt building, storing the answer and usage.
Histories of 1k, 10k and 100k stored messages are pre-loaded into a real SQLite file.

Then bursts: N new conversations asked at the same instant, as a busy adapter does.
The model holds every answer until all N requests are in, then finishes them all at
once; printed are `reply()` to model request and model finished to `ReplyDone`.

    python -m bench.engine [--turns 300] [--sizes 1000,10000,100000] [--bursts 1,10,50,500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlite_utils import Database

from bot import tokens
from bot.config import Settings
from bot.engine import Engine
from bot.model import AnswerChunk, Finished, ModelEvent, ModelRequest
from bot.store.sqlite import SQLiteStore
from bot.types import Author, ConversationKey, Message, ReplyDone, Usage

KEY = ConversationKey("bench", "T1", "C1")
LINE = "we should ship the release on friday after the review, any objections? "


class InstantModel:
    model = "instant"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        yield AnswerChunk("Sounds good to me; ")
        yield AnswerChunk("let's ship on Friday.")
        yield Finished(Usage(len(request.messages) * 20, 10))

    async def aclose(self) -> None:
        return None


class GatedModel:
    """Records when each request arrives; answers them all once `open` is set."""

    model = "gated"

    def __init__(self) -> None:
        self.asked: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.expected = 0  # requests in this round; when all are in, `everyone_in` is set
        self.everyone_in = asyncio.Event()
        self.open = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        question = str(request.messages[-1]["content"])
        self.asked[question] = time.perf_counter()
        self.expected -= 1
        if not self.expected:
            self.everyone_in.set()
        await self.open.wait()
        yield AnswerChunk("Sure.")
        self.finished[question] = time.perf_counter()
        yield Finished(Usage(100, 2))

    async def aclose(self) -> None:
        return None


def preload(path: Path, count: int) -> None:
    """Create the schema through the store, then bulk-insert `count` messages."""
    asyncio.run(_create_schema(path))
    db = Database(path)
    now = time.time() - count
    rows = (
        {
            "conversation": str(KEY),
            "platform_id": f"old{n}",
            "role": "user" if n % 2 == 0 else "assistant",
            "author_id": f"U{n % 7}",
            "author_name": f"Person {n % 7}",
            "text": f"{LINE}#{n}",
            "thinking": "",
            "attachments": "[]",
            "tokens": tokens.count(f"{LINE}#{n}"),  # as the engine would have stored it
            "created_at": now + n,
        }
        for n in range(count)
    )
    db["messages"].insert_all(rows, batch_size=5000)  # type: ignore[union-attr]
    db.conn.commit()
    db.close()


async def _create_schema(path: Path) -> None:
    store = await SQLiteStore.open(str(path))
    await store.aclose()


async def measure(path: Path, turns: int) -> list[float]:
    store = await SQLiteStore.open(str(path))
    settings = Settings(mistral_api_key="x", database_url=f"sqlite:///{path}")
    engine = Engine(settings, store, InstantModel())
    await engine.start()
    author = Author("U1", "Alice")
    timings: list[float] = []
    for n in range(turns + 5):  # the first turns trim the pre-loaded window; not measured
        message = Message(KEY, f"new{n}", author, f"question number {n}: what now?")
        started = time.perf_counter()
        async for event in engine.reply(message):
            last = event
        elapsed = time.perf_counter() - started
        assert isinstance(last, ReplyDone)
        if n >= 5:
            timings.append(elapsed * 1000)
    await engine.aclose()
    return timings


async def burst(path: Path, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """`reply()` to model request, and model finished to ReplyDone, in ms."""
    store = await SQLiteStore.open(str(path))
    model = GatedModel()
    engine = Engine(Settings(mistral_api_key="x"), store, model)
    await engine.start()
    to_request: list[float] = []
    to_done: list[float] = []

    async def ask(key: ConversationKey, question: str) -> None:
        started = time.perf_counter()
        message = Message(key, question, Author("U1", "Alice"), question, is_group=False)
        async for event in engine.reply(message):
            if isinstance(event, ReplyDone):
                to_done.append((time.perf_counter() - model.finished[question]) * 1000)
        to_request.append((model.asked[question] - started) * 1000)

    for r in range(rounds):
        model.open.clear()
        model.everyone_in.clear()
        model.expected = n
        asks = [
            asyncio.create_task(ask(ConversationKey("bench", "T1", f"C{r}-{i}"), f"q{r}-{i}"))
            for i in range(n)
        ]
        await model.everyone_in.wait()
        model.open.set()
        await asyncio.gather(*asks)
    await engine.aclose()
    return to_request, to_done


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--bursts", default="1,10,50,500")
    args = parser.parse_args()
    tokens.load()
    print(f"{'stored messages':>16}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}")
    for size in (int(s) for s in args.sizes.split(",") if s):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            preload(path, size)
            timings = asyncio.run(measure(path, args.turns))
        print(
            f"{size:>16,}  {percentile(timings, 50):>7.2f}  {percentile(timings, 99):>7.2f}"
            f"  {max(timings):>7.2f}"
        )
    print(f"\n{'burst of N':>16}  reply -> model request p50/p99 ms  model done -> ReplyDone")
    for n in (int(s) for s in args.bursts.split(",") if s):
        with tempfile.TemporaryDirectory() as tmp:
            rounds = max(1, 200 // n)
            asked, done = asyncio.run(burst(Path(tmp) / "bench.db", n, rounds))
        print(
            f"{n:>16,}  {percentile(asked, 50):>16.1f} / {percentile(asked, 99):<15.1f}"
            f"  {percentile(done, 50):>17.1f} / {percentile(done, 99):<15.1f}"
        )


if __name__ == "__main__":
    main()
