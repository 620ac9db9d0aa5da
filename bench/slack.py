"""Slack adapter under load: N concurrent threads through the real slack-bolt app.

    python -m bench.slack --n 1 10 50 500

Per N, a fresh bot process (the production wiring: bot.app.open_engine, SQLite file,
MistralClient, SlackAdapter over Socket Mode) runs against FakeSlack with Slack's
limits enforced (chat.update 50/min per workspace, chat.postMessage ~1/s per
channel; each mention delivered twice, as app_mention and message; the bot's own
posts and edits echoed back as events) and FakeMistral streaming 200 tokens at 50/s
after 0.3 s. The fakes run in this process; the bot's CPU time and peak RSS are read
from /proc for its own process only. Threads are spread over channels
(`--per-channel`, default 1). Each N runs `--repeat` bursts in the same bot process
(default 10 at N=1, 3 at N=10 and N=50, else 1) with `--quiet` seconds (default 20)
between bursts, so that small N give real percentiles; `--quiet 60` makes every burst
start with Slack's per-minute windows empty, as bursts a minute or more apart do.
Replies stream natively (chat.startStream, also in channel threads) while the start and
stop budgets allow, else are posted and edited; "updates" counts both kinds of growth.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import cpu_seconds, pct, peak_rss_mib
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.slack import FakeSlack

TOKENS = 200
QUIET = 20.0  # default seconds between bursts (--quiet)
QUESTION = re.compile(r"bench question (\d+)$")


# The bot process


async def bot(api_url: str, mistral_url: str, db: str, app_token: str, bot_token: str) -> None:
    from adapters.slack import SlackAdapter
    from adapters.slack.settings import SlackSettings
    from bot.app import open_engine
    from bot.config import Settings

    slack = SlackSettings(bot_token=bot_token, app_token=app_token, api_base_url=api_url)
    settings = Settings(
        mistral_api_key="bench-key-0000000000",
        mistral_base_url=mistral_url,
        database_url=f"sqlite:///{db}",
        log_level="WARNING",
    )
    engine = await open_engine(settings)
    adapter = SlackAdapter(engine, slack)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(adapter.close()))
    await adapter.run()
    await engine.aclose()


@dataclass
class Thread:
    index: int
    channel: str
    ts: str


@dataclass
class Result:
    n: int
    repeat: int = 1
    complete: int = 0
    wall: float = 0.0
    ack_ms: list[float] = field(default_factory=list)
    to_request_ms: list[float] = field(default_factory=list)
    first_visible_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    updates: list[int] = field(default_factory=list)
    streams: int = 0  # replies shown through native streaming
    ratelimited: int = 0
    cpu_per_reply: float = 0.0
    rss_mib: float = 0.0
    start_rss_mib: float = 0.0


def done(fake: FakeSlack, thread: Thread) -> bool:
    text = fake.thread_text(thread.channel, thread.ts)
    return len(text.split()) == TOKENS and text.endswith("more")


async def start_bot(slack: FakeSlack, mistral: FakeMistral, db: Path) -> asyncio.subprocess.Process:
    args = [slack.api_url, mistral.base_url, str(db), slack.app_token, slack.bot_token]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.slack", "--bot", *args
    )
    deadline = time.monotonic() + 60
    while not slack.hub.connections:
        if time.monotonic() > deadline or process.returncode is not None:
            raise RuntimeError("the bot process did not connect")
        await asyncio.sleep(0.05)
    return process


async def wait_all(fake: FakeSlack, threads: list[Thread], limit: float) -> None:
    deadline = time.monotonic() + limit
    pending = list(threads)
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if not done(fake, t)]
        await asyncio.sleep(0.05)


async def run_round(
    n: int, per_channel: int, limit: float, repeat: int, quiet: float = QUIET
) -> Result:
    result = Result(n, repeat=repeat)
    mistral = FakeMistral(first_token_delay=0.3, token_interval=0.02, default_tokens=TOKENS)
    slack = FakeSlack(limits=True, ack_timeout=3.0)
    await mistral.start()
    await slack.start()
    with tempfile.TemporaryDirectory() as tmp:
        process = await start_bot(slack, mistral, Path(tmp) / "bench.db")
        result.start_rss_mib = peak_rss_mib(process.pid)
        try:
            warm = Thread(-1, "CWARM", slack.user_message("U1", "CWARM", "<@UBOT> warm up"))
            await wait_all(slack, [warm], 30)
            await asyncio.sleep(1.0)
            for rep in range(repeat):
                await measure(slack, mistral, process.pid, n, per_channel, limit, result, rep)
                await asyncio.sleep(quiet)
            result.cpu_per_reply /= repeat
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    await slack.stop()
    await mistral.stop()
    return result


async def measure(
    slack: FakeSlack,
    mistral: FakeMistral,
    pid: int,
    n: int,
    per_channel: int,
    limit: float,
    result: Result,
    rep: int,
) -> None:
    first_delivery, first_call = len(slack.hub.deliveries), len(slack.calls)
    first_request, limited = len(mistral.requests), sum(slack.ratelimited.values())
    cpu = cpu_seconds(pid)
    started = time.monotonic()
    threads = []
    for i in range(n):
        channel = f"C{rep}x{i // per_channel:05d}"
        user = ("U1", "U2", "U3")[i % 3]
        threads.append(
            Thread(i, channel, slack.user_message(user, channel, f"<@UBOT> bench question {i}"))
        )
    await wait_all(slack, threads, limit)
    result.wall = max(result.wall, time.monotonic() - started)
    await asyncio.sleep(0.5)
    result.cpu_per_reply += (cpu_seconds(pid) - cpu) / n
    result.rss_mib = peak_rss_mib(pid)
    result.ratelimited += sum(slack.ratelimited.values()) - limited
    collect(slack, mistral, threads, first_delivery, first_call, first_request, result)


def collect(
    slack: FakeSlack,
    mistral: FakeMistral,
    threads: list[Thread],
    first_delivery: int,
    first_call: int,
    first_request: int,
    result: Result,
) -> None:
    deliveries = slack.hub.deliveries[first_delivery:]
    result.ack_ms = [(d.acked - d.sent) * 1000 for d in deliveries if d.acked]
    mention_sent: dict[str, float] = {}
    for d in deliveries:
        ts = str(d.payload.get("event", {}).get("ts", ""))
        mention_sent[ts] = min(mention_sent.get(ts, d.sent), d.sent)
    request_of: dict[int, int] = {}
    for j in range(first_request, len(mistral.requests)):
        match = QUESTION.search(text_of(mistral.requests[j]["messages"][-1]["content"]))
        if match:
            request_of[int(match.group(1))] = j
    growth = ("chat.update", "chat.appendStream")
    updates = [c for c in slack.calls[first_call:] if c.method in growth and c.ok]
    for thread in threads:
        messages = slack.bot_messages(thread.channel, thread.ts)
        found = request_of.get(thread.index)
        if not messages or found is None or not done(slack, thread):
            continue
        j = found
        result.complete += 1
        stamps = {m.ts for m in messages}
        result.updates.append(sum(1 for c in updates if c.args.get("ts") in stamps))
        result.streams += any(m.streamed for m in messages)
        result.to_request_ms.append((mistral.request_times[j] - mention_sent[thread.ts]) * 1000)
        first_visible = min(m.created for m in messages)
        result.first_visible_ms.append((first_visible - mistral.first_token_times[j]) * 1000)
        finished = max(m.last_change for m in messages)
        result.complete_ms.append((finished - mistral.last_token_times[j]) * 1000)


def report(r: Result) -> str:
    def pair(values: list[float], digits: int = 0) -> str:
        return f"{pct(values, 0.5):.{digits}f} / {pct(values, 0.99):.{digits}f}"

    live = sum(1 for u in r.updates if u)
    return (
        f"| {r.n} ×{r.repeat} | {r.complete}/{r.n * r.repeat}, {r.wall:.1f} s | "
        f"{pair(r.ack_ms, 1)} | "
        f"{pair(r.to_request_ms, 1)} | {pair(r.first_visible_ms)} | {pair(r.complete_ms)} | "
        f"{statistics.fmean(r.updates) if r.updates else 0:.1f} ({live} grew, "
        f"{r.streams} native) | "
        f"{r.ratelimited} | {r.cpu_per_reply * 1000:.0f} | "
        f"{r.start_rss_mib:.0f} → {r.rss_mib:.0f} |"
    )


HEADER = (
    "| N ×rounds | complete, slowest round | ack ms p50/p99 | mention→model request ms "
    "| first token→first text ms | last token→complete ms | updates/reply | 429s "
    "| CPU ms/reply | RSS MiB at start → peak |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


async def main(args: argparse.Namespace) -> None:
    print(HEADER, flush=True)
    for n in args.n:
        repeat = args.repeat or {1: 10, 10: 3, 50: 3}.get(n, 1)
        result = await run_round(n, args.per_channel, args.limit, repeat, args.quiet)
        print(report(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 50, 500])
    parser.add_argument("--per-channel", type=int, default=1, help="threads per channel")
    parser.add_argument("--limit", type=float, default=600, help="seconds to wait per round")
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="rounds per N (default: 10, 3, 3 at N=1, 10, 50; else 1)",
    )
    parser.add_argument("--quiet", type=float, default=QUIET, help="seconds between bursts")
    parser.add_argument("--bot", nargs=5, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.bot:
        asyncio.run(bot(*parsed.bot))
    else:
        asyncio.run(main(parsed))
