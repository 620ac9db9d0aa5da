"""The engine's own cost of one tool round, without the model's or the tool's time.

An in-process model asks for a no-op tool `rounds` times per reply, then answers; the
same replies without tools are the baseline. Per round the engine records the call's
usage, emits the activity line, runs the call (parse, timeout, cap), appends the round
to the prompt and asks again; at the end it stores the rounds with the answer. The
conversation holds 1,000 stored messages, as a busy channel does.

    python -m bench.tool_round [--replies 200] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.engine import KEY, preload
from bench.measure import pct
from bot import tokens
from bot.config import Settings
from bot.engine import Engine
from bot.model import AnswerChunk, Finished, ModelEvent, ModelRequest, ToolCall, ToolCalls
from bot.store.sqlite import SQLiteStore
from bot.tools import ToolContext, ToolSpec
from bot.tools.loop import Toolbox
from bot.types import Author, Message, Usage


class Noop:
    spec = ToolSpec("noop", "Does nothing.", {"type": "object", "properties": {}})
    seconds = 0.0  # time spent inside the tool, to subtract

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return "Doing nothing…"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        started = time.perf_counter()
        result = "nothing to report"
        Noop.seconds += time.perf_counter() - started
        return result


class ToolAsker:
    """Asks for the no-op `rounds_left` times, then answers; each step instantly."""

    model = "instant"

    def __init__(self) -> None:
        self.rounds_left = 0
        self.seconds = 0.0  # time spent inside this model, to subtract

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        started = time.perf_counter()
        if request.tools and request.tool_choice == "auto" and self.rounds_left:
            self.rounds_left -= 1
            call = ToolCall(f"call{self.rounds_left:05d}", "noop", "{}")
            events: list[ModelEvent] = [ToolCalls((call,)), Finished(Usage(900, 8), "tool_calls")]
        else:
            events = [AnswerChunk("Done."), Finished(Usage(900, 2))]
        self.seconds += time.perf_counter() - started
        for event in events:
            yield event

    async def aclose(self) -> None:
        return None


async def replies(
    engine: Engine, model: ToolAsker, count: int, rounds: int, tag: str
) -> list[float]:
    """Engine time per reply (model and tool time taken out), in seconds."""
    author = Author("U1", "Alice")
    timings = []
    for n in range(count):
        model.rounds_left, model.seconds, Noop.seconds = rounds, 0.0, 0.0
        message = Message(KEY, f"{tag}{n}", author, f"question {n}: look it up?")
        started = time.perf_counter()
        async for _ in engine.reply(message):
            pass
        elapsed = time.perf_counter() - started - model.seconds - Noop.seconds
        timings.append(elapsed)
    return timings


async def main(count: int, rounds: int) -> None:
    tokens.load()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rounds.db"
        await asyncio.to_thread(preload, path, 1000)
        store = await SQLiteStore.open(str(path))
        settings = Settings(
            mistral_api_key="x", database_url=f"sqlite:///{path}", tool_rounds=rounds
        )
        model = ToolAsker()
        engine = Engine(settings, store, model)
        engine.pipeline.toolbox = Toolbox([Noop()])
        await engine.start()
        await replies(engine, model, 20, rounds, "warm")  # trims the window, fills caches
        # Interleaved, so drift (the window growing, the cache warming) hits both alike.
        plain: list[float] = []
        tooled: list[float] = []
        for batch in range(count // 20):
            plain += await replies(engine, model, 20, 0, f"plain{batch}-")
            tooled += await replies(engine, model, 20, rounds, f"tools{batch}-")
        await engine.aclose()
    base = statistics.median(plain)
    per_round = [(t - base) / rounds * 1000 for t in tooled]
    print(f"replies: {len(plain)} without tools, {len(tooled)} with {rounds} rounds each")
    print(f"reply without tools: p50 {base * 1000:.2f} ms")
    print(
        f"engine overhead per tool round: p50 {pct(per_round, 0.5):.2f} ms, "
        f"p99 {pct(per_round, 0.99):.2f} ms (target p50 <= 3 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.replies, args.rounds))
