"""Search latency: `Store.search` p50 / p99 at 10k, 100k and 1M stored messages.

A team's history is generated straight into the store's database (bulk SQL, after the
store created its schema; then the FTS index or GIN index is built in one go): two
spaces of 25 channels each (busy ones and a quiet tail), one in five private, 8 threads
per channel and 20 DMs; 200 people. Messages are 3-40 words, 35% stop words, the rest
Zipf-Mandelbrot over 20k words (the commonest content word in ~3% of messages); 20% are
the bot's longer answers and 3% seeded copies (neither is searchable); two years of it.

Then searches as the tools make them: 1-4 words from the same distribution (15% phrased
as a question), asked from a public channel (55%), a private one (25%) or a DM that
reads one guild's public channels (20%); 10% with a place filter, 10% an author (an id
or a first name, which several people share), 10% `after` 30 days ago, 5% `before` 180
days ago; limit 5, 10 or 20. Each search is timed from the call to the returned hits,
through the store's own worker thread or connection pool, after 50 warm-up searches.

    python -m bench.search [--sizes 10000,100000,1000000] [--queries 1000]
                           [--backends sqlite,postgres] [--keep DIR] [--no-rounds]

Last, the engine's own overhead per tool round (bench/tool_round.py), without the
model's or the tool's time.

PostgreSQL is the machine's own (TEAMBOT_BENCH_POSTGRES_URL, default as in the tests);
it is skipped with a message when it does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import tool_round
from bench.measure import pct
from bot.store import INSERT_COLUMNS, PlaceInfo, Scope, SearchQuery, Store
from bot.store.sqlite import FTS_SCHEMA, SEARCHABLE, SQLiteStore

FTS_INSERT_TRIGGER = next(s for s in FTS_SCHEMA if "TRIGGER messages_fts_insert" in s)

POSTGRES_URL = os.environ.get(
    "TEAMBOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PLATFORM = "bench"
SPACES = ("G1", "G2")
CHANNELS = 25  # per space
THREADS = 8  # per channel
DMS = 20
PEOPLE = 200
DAY = 86400.0
SPAN = 730 * DAY  # two years of history
BATCH = 20_000
COLUMNS = ("id", *INSERT_COLUMNS, "place")  # the place is the conversation's, as the store keeps it
# Content words rank after the stop words (drawn separately): offset so, the commonest
# of them ("release") is in ~3% of messages, as a busy topic is in a team's chat.
CONTENT_RANK = 50
FIRST_NAMES = (
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert "
    "Sybil Trent Victor Walter Yasmin Zoé Élodie Søren Ana Chen"
).split()
TOPICS = (
    "release deploy review bug meeting staging outage budget roadmap design migration "
    "invoice customer ticket incident database latency dashboard onboarding contract "
    "hiring backlog sprint demo launch pricing security audit vendor laptop office"
).split()
STOP = (
    "the a to and of i we it is that for you in on this be with are have not but what "
    "can so do about if just at was will all they there should"
).split()


@dataclass(frozen=True)
class Team:
    """The places and conversations the generated history lives in."""

    places: list[PlaceInfo]
    conversations: list[tuple[str, str]]  # (conversation key, place key)
    weights: list[float]  # how busy each conversation is


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Topic words first (the most frequent), then made-up words of 2-4 syllables."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = list(TOPICS)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choices(syllables, k=rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_weights(n: int, s: float = 1.07, offset: int = 0) -> list[float]:
    """Cumulative Zipf-Mandelbrot weights: rank r has weight 1 / (r + offset) ** s."""
    return list(itertools.accumulate(1.0 / ((rank + offset) ** s) for rank in range(1, n + 1)))


def team() -> Team:
    places: list[PlaceInfo] = []
    conversations: list[tuple[str, str]] = []
    weights: list[float] = []
    for space in SPACES:
        for c in range(CHANNELS):
            visibility = "private" if c % 5 == 4 else "public"
            place = PlaceInfo(f"{PLATFORM}:{space}:C{c:02}", f"{space}-channel-{c}", visibility)
            places.append(place)
            busy = 1.0 / (c + 1)  # a few busy channels, a long quiet tail
            conversations.append((f"{place.key}:", place.key))
            weights.append(busy * 2)
            for t in range(THREADS):
                conversations.append((f"{place.key}:T{t}", place.key))
                weights.append(busy / THREADS)
    for d in range(DMS):
        place = PlaceInfo(f"{PLATFORM}::D{d:02}", f"dm-{d}", "dm")
        places.append(place)
        conversations.append((f"{place.key}:", place.key))
        weights.append(0.05)
    return Team(places, conversations, list(itertools.accumulate(weights)))


def history(count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """`count` message rows, oldest first: `COLUMNS` (id, `INSERT_COLUMNS`, place)."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    word_weights = zipf_weights(len(words), offset=CONTENT_RANK)
    stop_weights = zipf_weights(len(STOP), 0.8)
    convs = team()
    start = time.time() - SPAN
    for first in range(0, count, BATCH):
        n = min(BATCH, count - first)
        where = rng.choices(convs.conversations, cum_weights=convs.weights, k=n)
        content = iter(rng.choices(words, cum_weights=word_weights, k=n * 30))
        stops = iter(rng.choices(STOP, cum_weights=stop_weights, k=n * 30))
        for i in range(n):
            row_id = first + i + 1
            conversation, place = where[i]
            kind = rng.random()
            role = "assistant" if kind < 0.2 else "user"
            copied = 1 if 0.2 <= kind < 0.23 else 0
            length = min(40, 3 + int(rng.expovariate(1 / 9)))
            if role == "assistant":
                length = min(60, length * 3)  # answers are the long messages
            text = " ".join(
                next(stops) if rng.random() < 0.35 else next(content) for _ in range(length)
            )
            person = rng.randrange(PEOPLE)
            yield (
                row_id,
                conversation,
                None if role == "assistant" else f"{row_id}.{person}",
                role,
                "B0" if role == "assistant" else f"U{person:03}",
                "teambot" if role == "assistant" else f"{FIRST_NAMES[person % 25]} {person}",
                text,
                "",
                "[]",
                length * 2,
                None,
                start + SPAN * row_id / count,
                copied,
                None,
                place,
            )


def queries(count: int, now: float, seed: int = 11) -> list[tuple[Scope, SearchQuery]]:
    rng = random.Random(seed)
    words = vocabulary(random.Random(7))  # the history's vocabulary, same ranks
    word_weights = zipf_weights(len(words), offset=CONTENT_RANK)
    places = team().places
    out: list[tuple[Scope, SearchQuery]] = []
    for _ in range(count):
        asker = rng.random()
        if asker < 0.55:
            own = rng.choice([p for p in places if p.visibility == "public"])
            scope = Scope(PLATFORM, own.key)
        elif asker < 0.8:
            own = rng.choice([p for p in places if p.visibility == "private"])
            scope = Scope(PLATFORM, own.key)
        else:  # a DM reads the public channels of the spaces the asker shares with the bot
            own = rng.choice([p for p in places if p.visibility == "dm"])
            scope = Scope(PLATFORM, own.key, (rng.choice(SPACES),))
        n = rng.choices((1, 2, 3, 4), weights=(45, 30, 15, 10))[0]
        text = " ".join(rng.choices(words, cum_weights=word_weights, k=n))
        if rng.random() < 0.15:
            text = f"what did we say about the {text}?"
        filters: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.1:
            space = scope.spaces[0] if scope.spaces else own.space
            public = [p.key for p in places if p.visibility == "public" and p.space == space]
            filters["place"] = rng.choice([own.key, *public])
        elif roll < 0.2:
            person = rng.randrange(PEOPLE)
            filters["author"] = f"U{person:03}" if rng.random() < 0.5 else FIRST_NAMES[person % 25]
        elif roll < 0.3:
            filters["after"] = now - 30 * DAY
        elif roll < 0.35:
            filters["before"] = now - 180 * DAY
        out.append((scope, SearchQuery(text, limit=rng.choice((5, 10, 10, 20)), **filters)))
    return out


# Loading


def load_sqlite(path: Path, count: int) -> None:
    """Bulk insert with the FTS trigger off, then index the searchable rows in one go.

    The store has created the schema (see `bench_sqlite`)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("DROP TRIGGER messages_fts_insert")
    _places_and_conversations(conn.executemany, "?")
    marks = ", ".join(["?"] * len(COLUMNS))
    insert = f"INSERT INTO messages({', '.join(COLUMNS)}) VALUES ({marks})"
    rows = history(count)
    while batch := list(itertools.islice(rows, BATCH)):
        conn.executemany(insert, batch)
    conn.execute(
        f"INSERT INTO messages_fts(rowid, text) SELECT id, text FROM messages {SEARCHABLE}"
    )
    conn.execute(FTS_INSERT_TRIGGER)
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def _create_sqlite(path: Path) -> None:
    await (await SQLiteStore.open(str(path))).aclose()


def _places_and_conversations(executemany: Any, mark: str) -> None:
    teamwork = team()
    executemany(
        "INSERT INTO places(key, platform, space, name, visibility, updated_at) "
        f"VALUES ({', '.join([mark] * 6)})",
        [(p.key, PLATFORM, p.space, p.name, p.visibility, 0.0) for p in teamwork.places],
    )
    executemany(
        f"INSERT INTO conversations(key, created_at, window_start, place) "
        f"VALUES ({mark}, 0, 0, {mark})",
        teamwork.conversations,
    )


async def load_postgres(schema: str, count: int) -> None:
    """COPY the rows in with the GIN index dropped (tsv is computed as they arrive), then
    build the index and ANALYZE, as a restore would."""
    import psycopg
    from psycopg import sql

    from bot.store.postgres import PostgresStore

    await (await PostgresStore.open(POSTGRES_URL, schema=schema)).aclose()
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        index = await (
            await conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s "
                "AND indexname = 'idx_messages_tsv'",
                [schema],
            )
        ).fetchone()
        assert index is not None
        await conn.execute("DROP INDEX idx_messages_tsv")
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO places(key, platform, space, name, visibility, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(p.key, PLATFORM, p.space, p.name, p.visibility, 0.0) for p in team().places],
            )
            await cursor.executemany(
                "INSERT INTO conversations(key, created_at, window_start, place) "
                "VALUES (%s, 0, 0, %s)",
                team().conversations,
            )
        columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        copy = sql.SQL("COPY messages ({}) FROM STDIN").format(columns)
        rows = history(count)
        async with conn.cursor() as cursor, cursor.copy(copy) as copier:
            for row in rows:
                await copier.write_row(row)
        await conn.execute("SELECT setval('messages_id_seq', %s)", [count])
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute(index[0])
        await conn.commit()
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute("VACUUM ANALYZE")


# Measuring


Result = dict[str, list[float]]  # latencies in ms by filter ("all", "none", "place", ...)


def _kind(query: SearchQuery) -> str:
    if query.place:
        return "place"
    if query.author:
        return "author"
    return "after" if query.after else "before" if query.before else "none"


async def measure(store: Store, count: int) -> tuple[Result, float, float]:
    """Search latencies, mean hits per search, share of searches with none."""
    asked = queries(count + 50, time.time())
    timings: Result = {"all": [], "none": [], "place": [], "author": [], "after": [], "before": []}
    hits = 0
    empty = 0
    for n, (scope, query) in enumerate(asked):
        started = time.perf_counter()
        found = await store.search(scope, query)
        elapsed = (time.perf_counter() - started) * 1000
        if n >= 50:  # the first ones warm the caches
            timings["all"].append(elapsed)
            timings[_kind(query)].append(elapsed)
            hits += len(found)
            empty += not found
    return timings, hits / count, empty / count


async def bench_sqlite(path: Path, count: int, searches: int) -> tuple[Result, float, float]:
    started = time.perf_counter()
    await _create_sqlite(path)
    load_sqlite(path, count)
    loaded = time.perf_counter() - started
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*")) / 2**20
    print(f"  sqlite: loaded {count:,} in {loaded:.0f} s, {size:,.0f} MiB", flush=True)
    store = await SQLiteStore.open(str(path))
    try:
        return await measure(store, searches)
    finally:
        await store.aclose()


async def bench_postgres(count: int, searches: int) -> tuple[Result, float, float] | None:
    try:
        from bot.store.postgres import PostgresStore

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        started = time.perf_counter()
        await load_postgres(schema, count)
    except Exception as exc:  # no server here: say so and carry on
        print(f"  postgres: skipped ({type(exc).__name__}: {exc})")
        return None
    try:
        print(f"  postgres: loaded {count:,} in {time.perf_counter() - started:.0f} s", flush=True)
        store = await PostgresStore.open(POSTGRES_URL, schema=schema)
        try:
            return await measure(store, searches)
        finally:
            await store.aclose()
    finally:
        await _drop(schema)


async def _drop(schema: str) -> None:
    import psycopg

    with contextlib.suppress(Exception):
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def report(backend: str, size: int, result: tuple[Result, float, float]) -> None:
    timings, hits, empty = result
    every = timings["all"]
    print(
        f"{backend:>9} {size:>10,}  {pct(every, 0.5):>7.2f}  {pct(every, 0.99):>7.2f}"
        f"  {max(every):>7.2f}  {hits:>9.1f}  {empty:>8.0%}",
        flush=True,
    )
    kinds = ", ".join(
        f"{kind} {pct(values, 0.5):.1f} / {pct(values, 0.99):.1f}"
        for kind, values in timings.items()
        if kind != "all"
    )
    print(f"{'':>21}p50 / p99 ms by filter: {kinds}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--keep", help="build the SQLite files in DIR and leave them there")
    parser.add_argument("--no-rounds", action="store_true", help="skip the tool-round figure")
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"{'backend':>9} {'messages':>10}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}", end="")
    print(f"  {'hits/srch':>9}  {'no hits':>8}")
    for size in (int(s) for s in args.sizes.split(",") if s):
        if "sqlite" in backends:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(args.keep or tmp) / f"search-{size}.db"
                for old in path.parent.glob(path.name + "*"):
                    old.unlink()
                report("sqlite", size, asyncio.run(bench_sqlite(path, size, args.queries)))
        if "postgres" in backends:
            result = asyncio.run(bench_postgres(size, args.queries))
            if result is not None:
                report("postgres", size, result)
    if not args.no_rounds:
        asyncio.run(tool_round.main(200, 4))


if __name__ == "__main__":
    main()
