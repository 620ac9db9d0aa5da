"""Several bot processes on one PostgreSQL database, Slack over HTTP behind a balancer.

    python -m bench.scale --n 200 --procs 1 2

Per process count, real `teambot run` processes (tests/fakes/processes.py) share a
fresh schema of the machine's PostgreSQL; FakeSlack in HTTP mode (Slack's rate
limits off: this measures the bot, not Slack's budgets) hands events to the processes
in turn. N DM conversations each get `--per` questions in one burst, question k of
conversation i going to process (i + k) % procs, so every conversation is shared by
every process. FakeMistral streams 40 tokens at 100/s after 0.1 s.

Printed per run: replies per second (from the first question to the last stream's
end), question to model request p50/p99 for each conversation's first question (the
later ones wait for the reply before them), duplicate answers, and order violations (a
conversation's request that started before the stream answering the question stored
before it had ended: "arrival order" is the order the store holds the questions in).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.measure import pct
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.processes import BalancedSlack, Bots

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class TimedMistral(FakeMistral):
    """FakeMistral that keeps (start, end, newest question) for every request."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.spans: list[tuple[float, float, str]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        response = await super()._handle(request)
        with contextlib.suppress(ValueError):
            body = await request.json()  # aiohttp keeps the body it read
            self.spans.append(
                (start, time.perf_counter(), text_of(body["messages"][-1]["content"]))
            )
        return response


def question(conv: int, k: int) -> str:
    return f"scale {conv:04d} msg {k}"


async def run(n: int, per: int, procs: int, sqlite: bool = False) -> dict[str, float]:
    if sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            return await run_on(f"sqlite:///{tmp}/bench.db", n, per, procs)
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    database = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        return await run_on(database, n, per, procs)
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def run_on(database: str, n: int, per: int, procs: int) -> dict[str, float]:
    async with TimedMistral(first_token_delay=0.1, token_interval=0.01) as model:
        model.default_tokens = 40
        slack = BalancedSlack(limits=False)
        await slack.start()
        with tempfile.TemporaryDirectory() as tmp:
            bots = Bots(model, slack, database, Path(tmp), TEAMBOT_LOG_LEVEL="WARNING")
            try:
                await bots.start(procs)
                result = await burst(model, slack, n, per, procs)
                if database.startswith("postgresql"):
                    order = await stored(database)
                    result["violations"] = float(violations(model, order))
                return result
            finally:
                await bots.stop()
                await slack.stop()


async def burst(
    model: TimedMistral, slack: BalancedSlack, n: int, per: int, procs: int
) -> dict[str, float]:
    sent: dict[str, float] = {}
    for i in range(n):
        slack.add_channel(f"D{i:04d}", "im")
    for k in range(per):
        for i in range(n):
            slack.to = (i + k) % procs
            text = question(i, k)
            sent[text] = time.perf_counter()
            slack.user_message("U1", f"D{i:04d}", text)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        asked = {span[2] for span in model.spans}
        if all(text in asked for text in sent):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # time for any duplicate to show up
    first_request: dict[str, float] = {}
    requests: dict[str, int] = {}
    ended: dict[str, float] = {}
    for start, end, text in sorted(model.spans):
        requests[text] = requests.get(text, 0) + 1
        first_request.setdefault(text, start)
        ended.setdefault(text, end)
    answered = [m for m in slack.messages.values() if m.is_bot and not m.deleted]
    duplicates = sum(count - 1 for count in requests.values() if count > 1)
    duplicates += sum(max(0, sum(1 for m in answered if text in m.text) - 1) for text in sent)
    # First questions only: a later one waits for its conversation's earlier reply.
    firsts = [question(i, 0) for i in range(n)]
    waits = [(first_request[t] - sent[t]) * 1000 for t in firsts if t in first_request]
    took = max(ended.values()) - min(sent.values())
    return {
        "replies": float(len(first_request)),
        "missing": float(len(sent) - len(first_request)),
        "per_second": len(first_request) / took,
        "p50_ms": pct(waits, 0.5),
        "p99_ms": pct(waits, 0.99),
        "duplicates": float(duplicates),
    }


async def stored(database: str) -> dict[str, list[str]]:
    """Each conversation's questions in the order the store holds them."""
    import psycopg

    found: dict[str, list[str]] = {}
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT conversation, text FROM messages WHERE role = 'user' ORDER BY id"
        )
        for conversation, text in await cursor.fetchall():
            found.setdefault(conversation, []).append(text)
    return found


def violations(model: TimedMistral, questions: dict[str, list[str]]) -> int:
    """Replies that started before the reply to the question stored before theirs ended."""
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for start, end, text in sorted(model.spans):
        started.setdefault(text, start)
        ended.setdefault(text, end)
    count = 0
    for texts in questions.values():
        for earlier, later in itertools.pairwise(texts):
            if later in started and (earlier not in ended or started[later] < ended[earlier]):
                count += 1
    return count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="conversations")
    parser.add_argument("--per", type=int, default=2, help="questions per conversation")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sqlite", action="store_true", help="one process on SQLite instead")
    args = parser.parse_args()
    print(f"N={args.n} conversations x {args.per} questions, Slack HTTP, PostgreSQL")
    print("procs  replies  missing  replies/s  ask->request p50   p99  dup  order")
    for procs in args.procs:
        r = await run(args.n, args.per, procs, args.sqlite)
        print(
            f"{procs:>5}  {r['replies']:>7.0f}  {r['missing']:>7.0f}  {r['per_second']:>9.1f}"
            f"  {r['p50_ms']:>13.1f} ms {r['p99_ms']:>5.0f}  {r['duplicates']:>3.0f}"
            f"  {r.get('violations', float('nan')):>5.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
