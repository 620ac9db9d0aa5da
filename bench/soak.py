"""Soak: 10,000 replies over 500 conversations on Discord and on Slack, with model faults.

    python -m bench.soak --platform discord slack [--replies 10000] [--conversations 500]

Per platform, a fresh bot process (the production wiring of bench/discord.py and
bench/slack.py: bot.app.open_engine with its circuit breaker, SQLite file, the real
adapter) runs against the platform's loopback fake and a fake Mistral that answers
~12 tokens at once and fails `--faults` of its requests (5 %: 503, 500 and 429 with
Retry-After, in turn), which the client retries. Each conversation (a Discord channel, a
Slack thread) asks its next question as soon as the last one is answered, after a random
pause of up to `--think` seconds, until `--replies` answers have been seen. The platforms'
rate limits are off, so the bot, not the fakes' limits, sets the pace.

Every 1,000 replies: the bot's RSS (VmRSS, and RssAnon: without the SQLite file's
mapped pages), its open file descriptors (/proc/PID/fd),
its asyncio tasks (the bench's bot runner writes `len(asyncio.all_tasks())` to a file
every second) and the ingress p99 of those 1,000 replies: from the person's message
to the model request it caused (its first attempt). The first 1,000 are the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.measure import pct
from tests.fakes.mistral import Error, FakeMistral, error_body, text_of

BATCH = 1000
IDLE_S = 8.0  # quiet before the idle readings: background work (drains, edits) settles
QUESTION = re.compile(r"soak (c\d+q\d+)")
FAULTS = (
    Error(503, error_body("Service unavailable", "service_unavailable")),
    Error(500, error_body("Internal error", "internal_server_error")),
    Error(429, error_body("Rate limit exceeded", "rate_limited"), {"Retry-After": "0.2"}),
)


# The bot process: the platform bench's runner, plus a sampler of its asyncio tasks


async def sample_tasks(path: str) -> None:
    """Write the number of asyncio tasks (this one included) to `path` every second, as
    one "time count" line."""
    target = Path(path)
    while True:
        line = f"{time.time():.1f} {len(asyncio.all_tasks())}\n"
        await asyncio.to_thread(target.write_text, line)
        await asyncio.sleep(1.0)


async def discord_bot(api_url: str, gateway_url: str, mistral_url: str, db: str) -> None:
    from adapters.discord import DiscordAdapter
    from bot.app import load_config, open_engine
    from tests.fakes.discord import BOT_TOKEN

    env = {
        "DISCORD_BOT_TOKEN": BOT_TOKEN,
        "DISCORD_API_BASE_URL": api_url,
        "DISCORD_GATEWAY_URL": gateway_url,
        **core_env(mistral_url, db),
    }
    config = load_config(env)
    _, settings = config.platforms["Discord"]
    engine = await open_engine(config.core)
    await serve(DiscordAdapter(engine, settings), engine)


async def slack_bot(api_url: str, mistral_url: str, db: str, app: str, token: str) -> None:
    from adapters.slack import SlackAdapter
    from bot.app import load_config, open_engine

    env = {
        "SLACK_BOT_TOKEN": token,
        "SLACK_APP_TOKEN": app,
        "SLACK_API_BASE_URL": api_url,
        **core_env(mistral_url, db),
    }
    config = load_config(env)
    _, settings = config.platforms["Slack"]
    engine = await open_engine(config.core)
    await serve(SlackAdapter(engine, settings), engine)


def core_env(mistral_url: str, db: str) -> dict[str, str]:
    return {
        "MISTRAL_API_KEY": "bench-key-0000000000",
        "MISTRAL_BASE_URL": mistral_url,
        "DATABASE_URL": f"sqlite:///{db}",
        "TEAMBOT_LOG_LEVEL": "WARNING",
    }


async def serve(adapter: Any, engine: Any) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(adapter.close()))
    await adapter.run()
    await engine.aclose()


def trace_growth(path: str) -> None:
    """With SOAK_TRACEMALLOC=<file>: on each SIGUSR1 write the allocation sites that grew most
    since the previous SIGUSR1 to `path`, to find what grows when RSS does."""
    import tracemalloc

    tracemalloc.start(8)
    previous: list[tracemalloc.Snapshot] = []

    def dump() -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if previous:
            top = snapshot.compare_to(previous[-1], "traceback")[:12]
            with open(path, "a") as out:
                out.write(f"--- {time.time():.0f}\n")
                for stat in top:
                    out.write(f"{stat.size_diff / 1024:+.0f} KiB {stat.count_diff:+d} blocks\n")
                    out.write("".join(f"    {frame}\n" for frame in stat.traceback.format()))
        previous[:] = [snapshot]

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)


async def run_bot(platform: str, tasks_file: str, args: list[str]) -> None:
    """The bot process: the production wiring (`open_engine`, the real adapter), and the
    sampler of its asyncio tasks."""
    if os.environ.get("SOAK_TRACEMALLOC"):
        trace_growth(os.environ["SOAK_TRACEMALLOC"])  # the file to write the growth to
    sampler = asyncio.create_task(sample_tasks(tasks_file))
    try:
        if platform == "discord":
            await discord_bot(*args)
        else:
            await slack_bot(*args)
    finally:
        sampler.cancel()


# What the bench reads of the bot process


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """VmRSS, or RssAnon: the process's own memory, without the pages of files it maps
    (SQLite maps its database, so VmRSS grows with the file)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def last_task_count(path: Path) -> int:
    lines = path.read_text().splitlines() if path.exists() else []
    return int(lines[-1].split()[1]) if lines else -1


# The model: fast answers, a share of faults, the first request of each question timed


class SoakMistral(FakeMistral):
    def __init__(self, faults: float, seed: int) -> None:
        super().__init__(default_tokens=12)
        self.faults = faults
        self.random = random.Random(seed)
        self.kinds = itertools.cycle(FAULTS)
        self.requested: dict[str, float] = {}  # question tag -> its first request
        self.faulted = 0

    def _default_reply(self, body: dict[str, Any]) -> Any:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        match = QUESTION.search(text_of(users[-1].get("content")) if users else "")
        if match:
            self.requested.setdefault(match.group(1), time.perf_counter())
        if self.random.random() < self.faults:
            self.faulted += 1
            return next(self.kinds)
        return super()._default_reply(body)


def answered(text: str, tag: str) -> bool:
    """Whether a visible answer is the full echo of question `tag` (12 tokens)."""
    return f"soak {tag}" in text and text.rstrip().endswith("more")


# Platforms: start the bot, ask in a conversation, tell when the answer is complete


class Driver(Protocol):
    pid: int

    async def start(self, model_url: str, db: Path, tasks_file: Path) -> None: ...

    async def ask(self, conversation: int, text: str) -> str: ...

    def refresh(self) -> None: ...

    def complete(self, conversation: int, asked: str, tag: str) -> bool: ...

    async def stop(self) -> None: ...


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.soak", *args)


async def wait_for(condition: Callable[[], bool], process: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline or process.returncode is not None:
            raise RuntimeError(f"the bot process did not {what}")
        await asyncio.sleep(0.05)


class DiscordDriver:
    """A conversation is a channel's thread: the first question is a mention in its own
    channel, which the bot answers in a new thread (TEAMBOT_DISCORD_THREADS, on by
    default; the thread's id is the question's); later questions are asked in that
    thread. Where no thread was started, the conversation stays in the channel."""

    def __init__(self, conversations: int) -> None:
        from tests.fakes.discord import FakeDiscord

        self.fake = FakeDiscord(channels=conversations + 1, enforce_limits=False)
        self.rooms: list[str] = []
        self.first: dict[int, str] = {}  # conversation -> its first question's id
        self.latest: dict[str, Any] = {}  # channel or thread id -> the bot's newest message
        self.seen = 0
        self.pid = 0
        self.process: Any = None

    async def start(self, model_url: str, db: Path, tasks_file: Path) -> None:
        await self.fake.start()
        channels = self.fake.channels
        self.rooms = [c for c in channels if c != self.fake.general and channels[c]["type"] == 0]
        self.process = await spawn(
            "--bot",
            "discord",
            str(tasks_file),
            self.fake.api_base_url,
            self.fake.gateway_url,
            model_url,
            str(db),
        )
        self.pid = self.process.pid
        await wait_for(self.fake.gateway.connected.is_set, self.process, "connect")

    def place(self, conversation: int) -> str:
        first = self.first.get(conversation)
        return first if first in self.fake.channels else self.rooms[conversation]

    async def ask(self, conversation: int, text: str) -> str:
        where = self.place(conversation)
        sent = await self.fake.user_message(where, self.fake.alice, text, mention=True)
        self.first.setdefault(conversation, str(sent["id"]))
        return str(sent["id"])

    def refresh(self) -> None:
        posted = list(self.fake.posted.values())
        for item in posted[self.seen :]:
            if item.author_id == self.fake.bot_id:
                self.latest[item.channel_id] = item
        self.seen = len(posted)

    def complete(self, conversation: int, asked: str, tag: str) -> bool:
        reply = self.latest.get(self.place(conversation))
        return reply is not None and not reply.deleted and answered(reply.content, tag)

    async def stop(self) -> None:
        await stop_process(self.process)
        await self.fake.close()


class SlackDriver:
    def __init__(self, conversations: int) -> None:
        from tests.fakes.slack import FakeSlack

        self.fake = FakeSlack(limits=False, ack_timeout=3.0)
        self.threads: dict[int, tuple[str, str]] = {}  # conversation -> (channel, thread ts)
        self.latest: dict[tuple[str, str], Any] = {}  # thread -> the bot's newest message
        self.seen = 0
        self.pid = 0
        self.process: Any = None

    async def start(self, model_url: str, db: Path, tasks_file: Path) -> None:
        await self.fake.start()
        fake = self.fake
        args = [fake.api_url, model_url, str(db), fake.app_token, fake.bot_token]
        self.process = await spawn("--bot", "slack", str(tasks_file), *args)
        self.pid = self.process.pid
        await wait_for(lambda: bool(fake.hub.connections), self.process, "connect")

    async def ask(self, conversation: int, text: str) -> str:
        thread = self.threads.get(conversation)
        if thread is None:  # the first question starts the thread the bot answers in
            channel = f"CSOAK{conversation:04d}"
            ts = self.fake.user_message("U1", channel, f"<@UBOT> {text}")
            self.threads[conversation] = (channel, ts)
            return ts
        channel, root = thread
        return self.fake.user_message("U1", channel, text, thread_ts=root)

    def refresh(self) -> None:
        messages = list(self.fake.messages.values())
        for item in messages[self.seen :]:
            if item.is_bot and item.thread_ts:
                self.latest[(item.channel, item.thread_ts)] = item
        self.seen = len(messages)

    def complete(self, conversation: int, asked: str, tag: str) -> bool:
        reply = self.latest.get(self.threads[conversation])
        return reply is not None and not reply.deleted and answered(reply.visible, tag)

    async def stop(self) -> None:
        await stop_process(self.process)
        await self.fake.stop()


async def stop_process(process: Any) -> None:
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


# The run


@dataclass
class Checkpoint:
    replies: int
    seconds: float
    rss_mib: float
    anon_mib: float
    fds: int
    tasks: int
    ingress_p99_ms: float
    ingress_p50_ms: float


@dataclass
class Soak:
    platform: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    failed: int = 0  # questions not answered within the time limit
    faults: int = 0
    requests: int = 0
    wall: float = 0.0
    idle_before: tuple[float, int, int] = (0.0, 0, 0)  # RSS MiB, fds, tasks with nothing to do
    idle_after: tuple[float, int, int] = (0.0, 0, 0)


async def idle(pid: int, tasks_file: Path) -> tuple[float, int, int]:
    """RSS, descriptors and tasks once the bot has had `IDLE_S` seconds with nothing to do."""
    await asyncio.sleep(IDLE_S)
    return rss_mib(pid), open_fds(pid), last_task_count(tasks_file)


async def soak(platform: str, args: argparse.Namespace) -> Soak:
    result = Soak(platform)
    model = SoakMistral(args.faults, args.seed)
    driver: DiscordDriver | SlackDriver = (
        DiscordDriver(args.conversations)
        if platform == "discord"
        else SlackDriver(args.conversations)
    )
    await model.start()
    with tempfile.TemporaryDirectory() as tmp:
        tasks_file = Path(tmp) / "tasks.log"
        try:
            await driver.start(model.base_url, Path(tmp) / "soak.db", tasks_file)
            result.idle_before = await idle(driver.pid, tasks_file)
            await converse(driver, model, args, result, tasks_file)
            result.idle_after = await idle(driver.pid, tasks_file)
        finally:
            await driver.stop()
            await model.stop()
    result.faults, result.requests = model.faulted, len(model.requests)
    return result


async def converse(
    driver: DiscordDriver | SlackDriver,
    model: SoakMistral,
    args: argparse.Namespace,
    result: Soak,
    tasks_file: Path,
) -> None:
    rng = random.Random(args.seed)
    done = 0
    batch: list[float] = []  # ingress seconds of the replies of this batch
    started = time.monotonic()
    pending: dict[int, tuple[str, str, float, float]] = {}  # conv -> (id, tag, sent, deadline)
    asked = itertools.count()

    async def next_question(conversation: int, pause: float) -> None:
        await asyncio.sleep(pause)
        tag = f"c{conversation}q{next(asked)}"
        sent = time.perf_counter()
        message_id = await driver.ask(conversation, f"soak {tag}")
        pending[conversation] = (message_id, tag, sent, time.monotonic() + args.timeout)

    starters = [next_question(c, rng.uniform(0, args.think)) for c in range(args.conversations)]
    await asyncio.gather(*starters)
    followers: set[asyncio.Task[None]] = set()
    while done < args.replies:
        await asyncio.sleep(0.05)
        driver.refresh()
        for conversation, (message_id, tag, sent, deadline) in list(pending.items()):
            finished = driver.complete(conversation, message_id, tag)
            if not finished and time.monotonic() < deadline:
                continue
            del pending[conversation]
            if finished:
                done += 1
                batch.append(model.requested.get(tag, float("nan")) - sent)
            else:
                result.failed += 1
            if done and done % BATCH == 0 and batch:
                result.checkpoints.append(checkpoint(driver.pid, done, started, batch, tasks_file))
                if os.environ.get("SOAK_TRACEMALLOC") and done in (BATCH, args.replies):
                    os.kill(driver.pid, signal.SIGUSR1)  # what grew since the warm-up
                print(line(result.checkpoints[-1]), flush=True)
                batch = []
            if done + len(pending) + len(followers) < args.replies:
                task = asyncio.create_task(next_question(conversation, rng.uniform(0, args.think)))
                followers.add(task)
                task.add_done_callback(followers.discard)
    result.wall = time.monotonic() - started
    for task in followers:
        task.cancel()


def checkpoint(pid: int, done: int, started: float, batch: list[float], tasks: Path) -> Checkpoint:
    known = [value for value in batch if value == value]  # drop NaN (no request seen)
    return Checkpoint(
        replies=done,
        seconds=time.monotonic() - started,
        rss_mib=rss_mib(pid),
        anon_mib=rss_mib(pid, "RssAnon"),
        fds=open_fds(pid),
        tasks=last_task_count(tasks),
        ingress_p99_ms=pct(known, 0.99) * 1000,
        ingress_p50_ms=pct(known, 0.5) * 1000,
    )


def line(c: Checkpoint) -> str:
    return (
        f"| {c.replies:,} | {c.seconds:.0f} | {c.rss_mib:.1f} | {c.anon_mib:.1f} | {c.fds} "
        f"| {c.tasks} "
        f"| {c.ingress_p50_ms:.0f} / {c.ingress_p99_ms:.0f} |"
    )


HEADER = (
    "| replies | s | RSS MiB | of it anon MiB | open fds | asyncio tasks "
    "| ingress ms p50 / p99 |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def verdict(result: Soak) -> str:
    points = result.checkpoints
    if len(points) < 2:
        return "too few checkpoints for a verdict"
    warm, rest = points[0], points[1:]
    before, after = result.idle_before, result.idle_after
    growth = points[-1].rss_mib - warm.rss_mib
    anon = points[-1].anon_mib - warm.anon_mib
    p99s = [c.ingress_p99_ms for c in rest]
    spread = (max(p99s) - min(p99s)) / min(p99s) * 100 if min(p99s) > 0 else float("inf")
    return (
        f"RSS after warm-up {warm.rss_mib:.1f} MiB, at the end {points[-1].rss_mib:.1f} MiB "
        f"(growth {growth:+.1f} MiB, of it anonymous {anon:+.1f} MiB, target ≤ 10); "
        f"fds {warm.fds} → {points[-1].fds} "
        f"(max {max(c.fds for c in rest)}); tasks {warm.tasks} → {points[-1].tasks} "
        f"(max {max(c.tasks for c in rest)}); ingress p99 after warm-up "
        f"{min(p99s):.0f}–{max(p99s):.0f} ms (spread {spread:.0f} %, target ≤ 20 %); "
        f"{result.failed} unanswered; {result.faults} model faults in {result.requests} "
        f"requests; {result.wall:.0f} s. Idle before → after: RSS {before[0]:.1f} → "
        f"{after[0]:.1f} MiB, fds {before[1]} → {after[1]}, tasks {before[2]} → {after[2]}"
    )


async def main(args: argparse.Namespace) -> None:
    for platform in args.platform:
        print(f"\n{platform}: {args.replies:,} replies over {args.conversations} conversations")
        print(HEADER, flush=True)
        result = await soak(platform, args)
        print(verdict(result), flush=True)


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bot":
        asyncio.run(run_bot(sys.argv[2], sys.argv[3], sys.argv[4:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", nargs="+", default=["discord", "slack"])
    parser.add_argument("--replies", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--faults", type=float, default=0.05, help="share of failed requests")
    parser.add_argument("--think", type=float, default=1.0, help="max pause between questions")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per answer")
    parser.add_argument("--seed", type=int, default=19)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
