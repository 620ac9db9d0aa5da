"""MistralClient on its own against FakeMistral: CPU per streamed reply, burst to request.

    python -m bench.client [--reps 20] [--bursts 5] [--n 50] [--profile]

FakeMistral runs in a child process (so its CPU is not counted) on loopback, streaming 200
tokens at 50/s after 0.3 s, as in bench/discord.py and bench/slack.py.

(a) CPU per reply at N=1: this process's CPU time (time.process_time) for one whole
    `MistralClient.stream()` of a 200-token reply, one reply at a time, after one warm-up reply.
(b) Burst: N `stream()` calls at once on a cold client (a new MistralClient, no connections);
    time from the burst's start to the fake receiving each request (both processes read
    CLOCK_MONOTONIC through time.perf_counter). Repeated `--bursts` times, a fresh client each;
    then the same on a client that has just answered a burst of N (its connections idle in
    the pool, if it keeps them).
--profile prints cProfile's top functions for a few N=1 replies and for one burst.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing
import platform
import pstats
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.measure import pct
from bot.mistral import MistralClient
from bot.model import Finished, ModelRequest

TOKENS = 200
KEY = "bench-key-0000000000"
MODEL = "mistral-small-2603"


# The fake's process: answers commands over a pipe.


def _serve(conn: Connection, first_token_delay: float, token_interval: float) -> None:
    asyncio.run(_serve_async(conn, first_token_delay, token_interval))


async def _serve_async(conn: Connection, first_token_delay: float, token_interval: float) -> None:
    from tests.fakes.mistral import FakeMistral

    loop = asyncio.get_running_loop()
    async with FakeMistral(
        first_token_delay=first_token_delay, token_interval=token_interval, default_tokens=TOKENS
    ) as fake:
        conn.send(fake.base_url)
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "times":
                conn.send(list(fake.request_times))
                fake.request_times.clear()
                fake.requests.clear()
            elif command == "stop":
                conn.send(None)
                return


class Fake:
    def __init__(self, first_token_delay: float, token_interval: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, first_token_delay, token_interval), daemon=True
        )
        self._process.start()
        self.base_url: str = self._conn.recv()

    def request_times(self) -> list[float]:
        self._conn.send("times")
        times: list[float] = self._conn.recv()
        return times

    def stop(self) -> None:
        self._conn.send("stop")
        self._conn.recv()
        self._process.join(5)


# The client side


def request(label: str) -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": f"bench {label}"}], max_tokens=400)


async def one_reply(client: MistralClient, label: str) -> None:
    last = None
    async for event in client.stream(request(label)):
        last = event
    assert isinstance(last, Finished), last


async def cpu_per_reply(base_url: str, reps: int) -> list[float]:
    client = MistralClient(KEY, base_url, MODEL)
    try:
        await one_reply(client, "warm")
        samples = []
        for i in range(reps):
            started = time.process_time()
            await one_reply(client, str(i))
            samples.append(time.process_time() - started)
        return samples
    finally:
        await client.aclose()


async def burst(
    fake: Fake, n: int, warm: bool, profiler: cProfile.Profile | None = None
) -> tuple[list[float], float, float]:
    """Seconds from the burst's start to each request's arrival, the burst's CPU, warm time."""
    client = MistralClient(KEY, fake.base_url, MODEL)
    warmed = 0.0
    try:
        if warm:  # a first burst leaves its connections idle in the pool
            warm_started = time.perf_counter()
            await asyncio.gather(*(one_reply(client, f"first {i}") for i in range(n)))
            warmed = time.perf_counter() - warm_started
            await asyncio.sleep(0.2)
        fake.request_times()  # forget anything before the burst
        if profiler is not None:
            profiler.enable()
        cpu = time.process_time()
        started = time.perf_counter()
        tasks = [asyncio.create_task(one_reply(client, f"burst {i}")) for i in range(n)]
        # The fake sends its first token 0.3 s after each request, so this CPU is the sending.
        await asyncio.sleep(0.25)
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        await asyncio.gather(*tasks)
        arrived = sorted(fake.request_times())
        assert len(arrived) == n, len(arrived)
        return [t - started for t in arrived], cpu, warmed
    finally:
        await client.aclose()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def profile(label: str, run: Any) -> None:
    profiler = cProfile.Profile()
    run(profiler)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(f"\n--- cProfile: {label} (by own time, then cumulative) ---")
    print(out.getvalue())


async def profiled_replies(base_url: str, reps: int, profiler: cProfile.Profile) -> None:
    profiler.enable()
    try:
        await cpu_per_reply(base_url, reps)
    finally:
        profiler.disable()


async def main_async(args: argparse.Namespace) -> None:
    fake = Fake(first_token_delay=0.3, token_interval=0.02)
    try:
        print(
            f"Python {platform.python_version()}, {multiprocessing.cpu_count()} cores; "
            f"FakeMistral in a child process, {TOKENS} tokens at 50/s after 0.3 s"
        )
        samples = await cpu_per_reply(fake.base_url, args.reps)
        print(
            f"(a) CPU per reply, N=1, {len(samples)} replies: p50 {ms(statistics.median(samples))}"
            f" ms, min {ms(min(samples))} ms, max {ms(max(samples))} ms"
            f" ({ms(statistics.median(samples) / (TOKENS + 2))} ms per SSE event)"
        )
        modes = [False, True]
        for warm in modes:
            arrivals: list[float] = []
            cpus: list[float] = []
            warm_times: list[float] = []
            for _ in range(args.bursts):
                times, cpu, warmed = await burst(fake, args.n, warm)
                arrivals += times
                cpus.append(cpu)
                warm_times.append(warmed)
                await asyncio.sleep(0.3)
            kind = "right after another burst" if warm else "cold client"
            extra = ""
            print(
                f"(b) N={args.n} burst, {kind}, {args.bursts} bursts: stream() -> request "
                f"p50 {ms(pct(arrivals, 0.5))} ms, p99 {ms(pct(arrivals, 0.99))} ms, "
                f"last {ms(max(arrivals))} ms; CPU in the first 250 ms p50 "
                f"{ms(statistics.median(cpus))} ms{extra}"
            )
    finally:
        fake.stop()


def profile_all(args: argparse.Namespace) -> None:
    profile_fake = Fake(first_token_delay=0.3, token_interval=0.02)
    try:
        profile(
            "5 replies at N=1",
            lambda p: asyncio.run(profiled_replies(profile_fake.base_url, 5, p)),
        )
        profile(
            f"the first 250 ms of one N={args.n} burst, cold",
            lambda p: asyncio.run(burst(profile_fake, args.n, False, p)),
        )
    finally:
        profile_fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="N=1 replies to time (default 20)")
    parser.add_argument("--bursts", type=int, default=5, help="bursts of N (default 5)")
    parser.add_argument("--n", type=int, default=50, help="requests per burst (default 50)")
    parser.add_argument("--profile", action="store_true", help="print cProfile summaries")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    if args.profile:
        profile_all(args)


if __name__ == "__main__":
    main()
