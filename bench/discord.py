"""Discord adapter under load: N concurrent conversations through the real discord.py client.

    python -m bench.discord --n 1 10 50 500 [--threads off]

Per N, a fresh bot process (the production wiring: bot.app.open_engine, SQLite file,
MistralClient, DiscordAdapter configured by DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL)
runs against FakeDiscord with Discord's limits enforced (5 sends+edits per 5 s per
channel, 50 requests/s global; the bot's own messages and edits echoed back over the
gateway) and FakeMistral streaming 200 tokens at 50/s after 0.3 s. Each conversation
is its own channel, all mentioned at once; with TEAMBOT_DISCORD_THREADS on (the default)
each mention gets its thread and the answer goes there. The fakes run in this process; the
bot's CPU time and peak RSS are read from /proc for its process only.

Run it as a module (`python -m bench.discord`): run as a script, this file's directory
would shadow the `discord` package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import cpu_seconds, pct, peak_rss_mib
from tests.fakes.discord import BOT_TOKEN, FakeDiscord, Posted
from tests.fakes.mistral import FakeMistral, Reply, text_of

TOKENS = 200
QUESTION = re.compile(r"bench question (\w+)")
_CONVERSATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("conv", default=None)


# The bot process


async def bot(api_url: str, gateway_url: str, mistral_url: str, db: str, threads: str) -> None:
    from adapters.discord import DiscordAdapter
    from bot.app import load_config, open_engine

    env = {
        "DISCORD_BOT_TOKEN": BOT_TOKEN,
        "DISCORD_API_BASE_URL": api_url,
        "DISCORD_GATEWAY_URL": gateway_url,
        "MISTRAL_API_KEY": "bench-key-0000000000",
        "MISTRAL_BASE_URL": mistral_url,
        "DATABASE_URL": f"sqlite:///{db}",
        "TEAMBOT_LOG_LEVEL": "WARNING",
        "TEAMBOT_DISCORD_THREADS": threads,
    }
    config = load_config(env)
    _, discord_settings = config.platforms["Discord"]
    engine = await open_engine(config.core)
    adapter = DiscordAdapter(engine, discord_settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(adapter.close()))
    await adapter.run()
    await engine.aclose()


# The fake model, tagged so each timestamp belongs to its conversation


class _Stamps(list[float]):
    """FakeMistral's token timestamps, also filed under the conversation being streamed."""

    def __init__(self, sink: dict[str, float], first_only: bool) -> None:
        super().__init__()
        self.sink, self.first_only = sink, first_only

    def _file(self, value: float) -> None:
        conv = _CONVERSATION.get()
        if conv is not None and not (self.first_only and conv in self.sink):
            self.sink[conv] = value

    def append(self, value: float) -> None:
        super().append(value)
        self._file(value)

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._file(value)


class TaggedMistral(FakeMistral):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.requested: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.answers: dict[str, str] = {}
        self.first_token_times = _Stamps(self.first, first_only=True)
        self.last_token_times = _Stamps(self.last, first_only=False)

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        reply: Reply = super()._default_reply(body)
        users = [m for m in body["messages"] if m.get("role") == "user"]
        match = QUESTION.search(text_of(users[-1].get("content")) if users else "")
        if match:
            conv = match.group(1)
            _CONVERSATION.set(conv)  # this handler task streams conversation `conv`
            self.requested[conv] = time.perf_counter()
            self.answers[conv] = reply.text
        return reply


# One run


@dataclass
class Result:
    n: int
    to_request: list[float] = field(default_factory=list)
    to_first_visible: list[float] = field(default_factory=list)
    mention_to_visible: list[float] = field(default_factory=list)
    to_complete: list[float] = field(default_factory=list)
    edits: list[int] = field(default_factory=list)
    rate_limited: int = 0
    cpu_per_reply: float = 0.0
    rss_mib: float = 0.0
    wall: float = 0.0
    threads: int = 0  # threads the bot started


async def run(n: int, threads: str = "on") -> Result:
    discord_fake = FakeDiscord(channels=n + 1)
    model = TaggedMistral(first_token_delay=0.3, token_interval=0.02, default_tokens=TOKENS)
    await discord_fake.start()
    await model.start()
    rooms = [cid for cid in discord_fake.channels if cid not in (discord_fake.general,)]
    rooms = [c for c in rooms if discord_fake.channels[c]["type"] == 0][:n]
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.discord",
            "--bot",
            discord_fake.api_base_url,
            discord_fake.gateway_url,
            model.base_url,
            str(Path(tmp) / "bench.db"),
            threads,
        )
        try:
            return await _measure(n, discord_fake, model, rooms, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
            await model.stop()
            await discord_fake.close()


def _answer(fake: FakeDiscord, asked: str) -> list[Posted]:
    """The answer's messages: in the question's thread, or replying to the question."""
    if asked in fake.channels:  # a thread's id is its first message's
        shown = (p for p in fake.bot_messages(asked) if not p.ephemeral)
        return sorted(shown, key=lambda p: int(p.id))
    return fake.replies_to(asked)


def _complete(fake: FakeDiscord, model: TaggedMistral, conv: str, asked: str) -> float | None:
    """When the whole answer became visible, or None while it is not yet."""
    parts = _answer(fake, asked)
    expected = model.answers.get(conv)
    if not parts or expected is None or "\n".join(p.content for p in parts) != expected.strip():
        return None
    return max(p.history[-1][0] for p in parts)


async def _measure(
    n: int, fake: FakeDiscord, model: TaggedMistral, rooms: list[str], pid: int
) -> Result:
    await fake.wait_until(fake.gateway.connected.is_set, 30, "the bot's gateway session")
    warm = await fake.user_message(fake.general, fake.alice, "bench question warm", mention=True)
    await fake.wait_until(
        lambda: _complete(fake, model, "warm", warm["id"]), 30, "the warm-up answer"
    )
    await asyncio.sleep(0.5)  # let the bot finish storing the warm-up reply
    fake.rate_limited = 0
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    asked: dict[str, tuple[str, float]] = {}
    for i, room in enumerate(rooms):
        at = time.perf_counter()
        msg = await fake.user_message(room, fake.alice, f"bench question {i}", mention=True)
        asked[str(i)] = (msg["id"], at)
    done: dict[str, float] = {}
    deadline = time.perf_counter() + 120 + n
    while len(done) < n and time.perf_counter() < deadline:
        for conv, (mid, _) in asked.items():
            if conv not in done and (seen := _complete(fake, model, conv, mid)) is not None:
                done[conv] = seen
        await asyncio.sleep(0.01)
    result = Result(n, wall=time.perf_counter() - started)
    result.cpu_per_reply = (cpu_seconds(pid) - cpu_before) / n
    result.rss_mib = peak_rss_mib(pid)
    result.rate_limited = fake.rate_limited
    result.threads = len(fake.threads_started)
    for conv, (mid, at) in asked.items():
        parts = _answer(fake, mid)
        if parts:
            result.mention_to_visible.append(parts[0].history[0][0] - at)
        if conv in model.requested:
            result.to_request.append(model.requested[conv] - at)
        if parts and conv in model.first:
            result.to_first_visible.append(parts[0].history[0][0] - model.first[conv])
        if conv in done and conv in model.last:
            result.to_complete.append(done[conv] - model.last[conv])
        result.edits.append(sum(len(p.history) - 1 for p in parts))
    if len(done) < n:
        print(f"  warning: only {len(done)} of {n} answers completed", file=sys.stderr)
    return result


def report(r: Result) -> str:
    ms = 1000.0
    return (
        f"N={r.n:<4} mention->request p50 {pct(r.to_request, 0.5) * ms:7.1f} ms  "
        f"p99 {pct(r.to_request, 0.99) * ms:7.1f} ms | "
        f"mention->first visible p50 {pct(r.mention_to_visible, 0.5) * ms:7.1f} ms  "
        f"p99 {pct(r.mention_to_visible, 0.99) * ms:7.1f} ms | "
        f"first token->visible p50 {pct(r.to_first_visible, 0.5) * ms:7.1f} ms  "
        f"p99 {pct(r.to_first_visible, 0.99) * ms:7.1f} ms | "
        f"last token->complete p50 {pct(r.to_complete, 0.5) * ms:7.1f} ms  "
        f"p99 {pct(r.to_complete, 0.99) * ms:7.1f} ms | "
        f"edits/reply {statistics.mean(r.edits):4.1f} (max {max(r.edits)}) | "
        f"429s {r.rate_limited} | CPU/reply {r.cpu_per_reply * ms:6.1f} ms | "
        f"peak RSS {r.rss_mib:6.1f} MiB | wall {r.wall:5.1f} s | threads {r.threads}"
    )


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


async def main(ns: list[int], as_json: bool, threads: str) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# Discord bench, {when}, {machine()}, threads {threads}")
    for n in ns:
        result = await run(n, threads)
        print(json.dumps(result.__dict__) if as_json else report(result), flush=True)


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bot":
        profile = os.environ.get("BENCH_PROFILE")  # a path: write the bot's cProfile stats there
        if profile:
            import cProfile

            cProfile.run("asyncio.run(bot(*sys.argv[2:7]))", profile)
        else:
            asyncio.run(bot(*sys.argv[2:7]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 50, 500])
    parser.add_argument("--json", action="store_true", help="raw numbers, one JSON line per N")
    parser.add_argument(
        "--threads", choices=("on", "off"), default="on", help="TEAMBOT_DISCORD_THREADS"
    )
    args = parser.parse_args()
    asyncio.run(main(args.n, args.json, args.threads))


if __name__ == "__main__":
    cli()
