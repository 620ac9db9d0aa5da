"""Memory and summaries: prompt tokens sent, and the engine's own time for `summarize`.

1. Memory. A 200-turn DM (one person asking, the bot answering) against an in-process
   model, with a small context budget, so the window moves often and the turns it drops
   are folded into the running summary (`bot/memory.py`). Turn 1 states a fact. Updates
   are awaited between turns, so the run is deterministic. Counted: our token count
   (`bot.tokens.count`) of the JSON of every request's messages, replies and memory
   updates alike, against resending the whole conversation so far every turn; whether
   the turn-1 fact reaches the last reply's system message; memory calls.
2. `summarize 1d` over 1,000 and 10,000 messages stored in one channel, with an instant
   in-process model and the default budget (32k): model calls, prompt tokens sent, and
   wall time with the model's own time subtracted (p50 over a few runs).

    python -m bench.memory [--turns 200] [--budgets 4000] [--sizes 1000,10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.engine import KEY, preload
from bench.measure import pct
from bot import tokens
from bot.config import Settings
from bot.engine import Engine
from bot.model import AnswerChunk, ChatMessage, Finished, ModelEvent, ModelRequest
from bot.store import PlaceInfo
from bot.store.sqlite import SQLiteStore
from bot.summaries import MEMORY_GUIDE
from bot.types import Author, ConversationKey, Message, Place, ReplyDone, Usage

DM = ConversationKey("bench", "T1", "D1")
FACT = "fact: the staging password rotates on Tuesdays."
FACT_WORDS = "staging password rotates on Tuesdays"
_FACT = re.compile(r"fact: [^.\n]*")
MEMORY_PREFIX = MEMORY_GUIDE.split(",")[0]  # "Below is the running summary"
ANSWER = (
    "Good question. The short version is that we keep the current setup for now, watch the "
    "error rate and the queue depth over the next few days, and revisit it at the Thursday "
    "review. If the numbers move the wrong way, we roll back the change, open a ticket for "
    "the platform team, and note the decision in the channel so everyone can follow along."
)
WORDS = (
    "deploy release billing service queue backlog retry timeout database migration index "
    "cache latency dashboard alert on-call rotation weekend rollout canary config flag "
    "customer report invoice export import schema review budget sprint roadmap ticket "
    "owner handover incident postmortem runbook staging production cluster node memory "
    "disk backup restore permission token webhook integration partner vendor contract"
).split()
SPAN_ANSWER = "**Topics**\n- things [1]"


def question(n: int) -> str:
    """Question `n` (1-based): 30-60 words, the same every run; the first states the fact."""
    rng = random.Random(n)
    words = [rng.choice(WORDS) for _ in range(rng.randint(22, 52))]
    text = f"Question {n}: what should we do about the {' '.join(words)}, and who owns it?"
    return f"{FACT} {text}" if n == 1 else text


def sent_tokens(request: ModelRequest) -> int:
    """Our count of the JSON of the request's messages."""
    return tokens.count(json.dumps(request.messages))


def tool_tokens(request: ModelRequest) -> int:
    return tokens.count(json.dumps(request.tools)) if request.tools else 0


class Recorder:
    """Answers instantly and keeps every request; counting happens after the timed part."""

    model = "instant"

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self.seconds = 0.0  # time spent inside this model, to subtract

    def answer(self, request: ModelRequest) -> str:
        return ANSWER

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        started = time.perf_counter()
        self.requests.append(request)
        text = self.answer(request)
        # What the API would count, roughly: the messages' text (no JSON), as our estimate
        # does, so the calibration ratio stays near 1 and the budget is the configured one.
        prompt = sum(tokens.count(str(m.get("content", ""))) for m in request.messages)
        usage = Usage(prompt + tool_tokens(request), tokens.count(text))
        self.seconds += time.perf_counter() - started
        yield AnswerChunk(text)
        yield Finished(usage)

    async def aclose(self) -> None:
        return None


def is_memory(request: ModelRequest) -> bool:
    return str(request.messages[0]["content"]).startswith(MEMORY_PREFIX)


class MemoryModel(Recorder):
    """Memory updates keep the "fact:" sentences they see; replies are a fixed answer."""

    def answer(self, request: ModelRequest) -> str:
        if not is_memory(request):
            return ANSWER
        facts = dict.fromkeys(_FACT.findall(str(request.messages[-1]["content"])))
        return "Known: " + ("; ".join(facts) if facts else "nothing")


class SpanModel(Recorder):
    def answer(self, request: ModelRequest) -> str:
        return SPAN_ANSWER


@dataclass
class MemoryRun:
    budget: int
    turns: int
    replies: list[ModelRequest] = field(default_factory=list)
    updates: list[ModelRequest] = field(default_factory=list)
    full: int = 0  # tokens of the whole conversation so far, summed over turns
    full_system: int = 0  # the same plus the memory-less system message and tools each turn
    fact_in_last: bool = False
    window_moves: int = 0


async def memory_run(path: Path, budget: int, turns: int) -> MemoryRun:
    store = await SQLiteStore.open(str(path))
    settings = Settings(
        mistral_api_key="x",
        database_url=f"sqlite:///{path}",
        context_tokens=budget,
        max_output_tokens=256,
    )
    model = MemoryModel()
    engine = Engine(settings, store, model)
    await engine.start()
    author = Author("U1", "Alice")
    memory = engine.pipeline.memory
    assert memory is not None
    for n in range(1, turns + 1):
        message = Message(DM, f"q{n}", author, question(n), is_group=False)
        last = None
        async for event in engine.reply(message):
            last = event
        assert isinstance(last, ReplyDone), last
        await memory.idle()
    await engine.aclose()
    run = MemoryRun(budget, turns)
    run.replies = [r for r in model.requests if not is_memory(r)]
    run.updates = [r for r in model.requests if is_memory(r)]
    assert len(run.replies) == turns
    run.fact_in_last = FACT_WORDS in str(run.replies[-1].messages[0]["content"])
    # Resending everything: turn n sends questions 1..n and answers 1..n-1.
    history: list[ChatMessage] = []
    for n, request in enumerate(run.replies, 1):
        history.append({"role": "user", "content": question(n)})
        conversation = tokens.count(json.dumps(history))
        base: ChatMessage = {
            "role": "system",
            "content": re.sub(
                r"\n\nSummary of this conversation's earlier turns.*?(?=\n\nToday's date)",
                "",
                str(request.messages[0]["content"]),
                flags=re.S,
            ),
        }
        run.full += conversation
        run.full_system += tokens.count(json.dumps([base, *history])) + tool_tokens(request)
        history.append({"role": "assistant", "content": ANSWER})
    return run


def report_memory(run: MemoryRun) -> None:
    replies = sum(map(sent_tokens, run.replies))
    updates = sum(map(sent_tokens, run.updates))
    systems = sum(tokens.count(json.dumps([r.messages[0]])) for r in run.replies)
    tools = sum(map(tool_tokens, run.replies))
    sent = replies + updates
    share = sent / run.full
    conversation = sent - systems
    print(f"budget {run.budget:,} tokens, {run.turns} turns, DM, built-in tools on")
    print(
        f"  reply requests: {len(run.replies)}, {replies:,} tokens "
        f"(system messages {systems:,}, of which the memory is part; turns {replies - systems:,})"
    )
    print(f"  memory updates: {len(run.updates)}, {updates:,} tokens")
    print(f"  tool definitions (not in the messages): {tools:,} tokens over all replies")
    largest = max(map(sent_tokens, run.replies))
    print(f"  largest reply request: {largest:,} tokens (messages' JSON)")
    print(
        f"  without the system messages (turns + memory updates): {conversation:,} vs "
        f"{run.full:,} ({conversation / run.full:.1%})"
    )
    print(
        f"  with the tool definitions, against a full history sent with the same system "
        f"message and tools: {sent + tools:,} vs {run.full_system:,} "
        f"({(sent + tools) / run.full_system:.1%})"
    )
    met = "met" if share <= 0.10 else "not met"
    print(
        f"memory: {sent:,} tokens sent vs {run.full:,} for the full history ({share:.1%}) "
        f"— target <= 10%: {met}; turn-1 fact in the last prompt: "
        f"{'yes' if run.fact_in_last else 'no'}; memory calls: {len(run.updates)}"
    )


@dataclass
class SpanRun:
    size: int
    calls: int
    prompt: int
    largest: int  # the largest call's prompt tokens
    engine_ms: list[float]
    messages: int


async def span_run(path: Path, size: int, runs: int) -> SpanRun:
    store = await SQLiteStore.open(str(path))
    await store.note_place(str(KEY), PlaceInfo("bench:T1:C1", "general", "public"))
    model = SpanModel()
    engine = Engine(Settings(mistral_api_key="x", database_url=f"sqlite:///{path}"), store, model)
    await engine.start()
    author = Author("U1", "Alice")
    place = Place("C1", "general", "public")
    timings: list[float] = []
    calls = prompt = largest = 0
    text = ""
    for _ in range(runs + 1):  # the first run warms the caches; not measured
        model.requests, model.seconds = [], 0.0
        started = time.perf_counter()
        result = await engine.command(KEY, author, "summarize", "1d", is_group=True, place=place)
        elapsed = time.perf_counter() - started - model.seconds
        timings.append(elapsed * 1000)
        calls = len(model.requests)
        sizes = [sent_tokens(request) for request in model.requests]
        prompt, largest = sum(sizes), max(sizes)
        text = result.text
    await engine.aclose()
    found = re.search(r"· ([\d,]+) messages? ·", text)
    assert found, text
    read = int(found.group(1).replace(",", ""))
    return SpanRun(size, calls, prompt, largest, timings[1:], read)


async def main(turns: int, budgets: list[int], sizes: list[int], runs: int) -> None:
    tokens.load()
    print(f"1. Memory: {turns} turns, questions 30-60 words, answers {len(ANSWER.split())} words")
    for budget in budgets:
        with tempfile.TemporaryDirectory() as tmp:
            run = await memory_run(Path(tmp) / "memory.db", budget, turns)
        report_memory(run)
    print("\n2. summarize 1d over one channel (budget 32,000), model time subtracted")
    print(
        f"{'messages':>9}  {'read':>6}  {'calls':>5}  {'prompt tokens':>13}  "
        f"{'largest call':>12}  {'p50 ms':>7}"
    )
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "span.db"
            await asyncio.to_thread(preload, path, size)
            span = await span_run(path, size, runs)
        print(
            f"{size:>9,}  {span.messages:>6,}  {span.calls:>5}  {span.prompt:>13,}  "
            f"{span.largest:>12,}  {pct(span.engine_ms, 0.5):>7.1f}  (runs: "
            + ", ".join(f"{t:.1f}" for t in span.engine_ms)
            + ")"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--budgets", default="4000")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(
        main(
            args.turns,
            [int(b) for b in args.budgets.split(",") if b],
            [int(s) for s in args.sizes.split(",") if s],
            args.runs,
        )
    )
