"""Several bot processes on one PostgreSQL database (see `bot.cluster`).

Each process holds one connection open for as long as it lives. On it, it holds a
session advisory lock on its own owner number (so the others can tell it is alive: a
process that dies loses its connection and with it the lock, at once) and LISTENs for
the others' news.

Turns: a question enters the `turns` table in the transaction that stores it,
serialised per conversation, so turns are in the order the questions were stored; its
reply starts when no earlier turn of the conversation is left, and leaving deletes
the row and NOTIFYs.
Turns of processes whose lock is gone are deleted by whoever waits behind them.
Waiters wake on NOTIFY, and look again every `POLL_S` whatever happens, so a lost
notification or a dead process costs at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from bot.cluster import OnChange

log = logging.getLogger("teambot.cluster")

# The first key of the two-key advisory locks that mark live processes ("tb" + 1).
OWNER_LOCKS = 0x7462_0001
POLL_S = 1.0
RECONNECT_S = (0.5, 1.0, 2.0, 5.0)

# A question's turn is inserted with the question, in `PostgresStore.add_question`'s
# transaction, under a per-conversation lock (TURN_LOCK), so within a conversation the
# turns' ids follow the order in which the questions were stored.
TURNS_MIGRATION = """
CREATE TABLE turns (
    id BIGSERIAL PRIMARY KEY,
    conversation TEXT NOT NULL,
    message_id BIGINT NOT NULL UNIQUE,
    owner BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_turns_conversation ON turns (conversation, id);
"""
TURN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('teambot_turn:' || %s))"
ADD_TURN = "INSERT INTO turns (conversation, message_id, owner, created_at) VALUES (%s, %s, %s, %s)"
# ADD_TURN, saying whether an earlier turn of the conversation is there (under the lock
# every earlier turn has committed, and RETURNING sees the rows from before the insert).
ADD_TURN_FIRST = (
    ADD_TURN + " RETURNING NOT EXISTS (SELECT 1 FROM turns t "
    "WHERE t.conversation = turns.conversation AND t.id < turns.id) AS first"
)

# The live owners: those whose advisory lock is held in this database.
LIVE_OWNERS = f"""
SELECT l.objid::bigint AS owner FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid::bigint = {OWNER_LOCKS}
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class PostgresCluster:
    def __init__(
        self, url: str, pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]], schema: str
    ) -> None:
        self._url = url
        self._pool = pool
        self._schema = schema
        self.owner = 0
        self._channel = ""
        self._conn: AsyncConnection[Any] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._handlers: list[OnChange] = []
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # Questions whose turn had no earlier one when stored: none can come before them.
        self._first: set[int] = set()
        self._closing = False

    # Life cycle

    async def start(self) -> None:
        await self._connect()
        await self._reap()
        self._listener = asyncio.create_task(self._listen(), name="teambot-cluster")

    async def aclose(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _connect(self) -> None:
        conn = await AsyncConnection.connect(self._url, autocommit=True)
        try:
            if self._schema:
                await conn.execute(
                    sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
                )
            await self._take_owner(conn)
            schema = (await (await conn.execute("SELECT current_schema()")).fetchone() or [""])[0]
            # NOTIFY channels are per database, schemas are not: one channel per schema.
            digest = hashlib.sha256(str(schema).encode()).hexdigest()[:16]
            self._channel = f"teambot_{digest}"
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _take_owner(self, conn: AsyncConnection[Any]) -> None:
        """Lock an owner number no live process holds (our old one after a reconnect)."""
        candidates = [self.owner] if self.owner else []
        candidates += [random.randrange(1, 2**31) for _ in range(20)]
        for candidate in candidates:
            row = await (
                await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [OWNER_LOCKS, candidate])
            ).fetchone()
            if row and row[0]:
                if self.owner and candidate != self.owner:
                    log.warning("database connection lost; this process's turns were released")
                self.owner = candidate
                return
        raise RuntimeError("no free owner number for this process")

    async def _listen(self) -> None:
        delays = iter(RECONNECT_S)
        while not self._closing:
            try:
                assert self._conn is not None
                async for note in self._conn.notifies():
                    delays = iter(RECONNECT_S)
                    self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lost the database's change feed (%s); reconnecting", exc)
            if self._closing:
                return
            await asyncio.sleep(next(delays, RECONNECT_S[-1]))
            try:
                await self._connect()
            except Exception as exc:
                log.warning("reconnecting the change feed failed (%s)", exc)
                continue
            # Anything may have changed while we were deaf: drop every cache, wake all.
            self._deliver("*", "")
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition("|")
        if kind == "t":
            self._wake(rest)
        elif kind == "c":
            sender, _, change = rest.partition("|")
            topic, _, key = change.partition("|")
            if sender != str(self.owner):
                self._deliver(topic, key)

    def _deliver(self, topic: str, key: str) -> None:
        for handler in self._handlers:
            try:
                handler(topic, key)
            except Exception:
                log.exception("change handler failed for %s %s", topic, key)

    # Changes

    def on_change(self, handler: OnChange) -> None:
        self._handlers.append(handler)

    async def publish(self, topic: str, key: str = "") -> None:
        payload = f"c|{self.owner}|{topic}|{key}"
        async with self._pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", [self._channel, payload])

    # Turns

    def first_in_line(self, question: int) -> None:
        """The store found no earlier turn when it stored `question` (saves a look)."""
        self._first.add(question)

    @asynccontextmanager
    async def turn(self, conversation: str, question: int) -> AsyncIterator[bool]:
        try:
            if question in self._first:
                self._first.discard(question)
                blocked = False
            else:
                blocked = await self._earlier(conversation, question)
            if blocked:
                await self._wait(conversation, question)
            yield blocked
        finally:
            await asyncio.shield(self._leave(conversation, question))

    async def _leave(self, conversation: str, question: int) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "WITH gone AS (DELETE FROM turns WHERE message_id = %s "
                    "RETURNING conversation) SELECT pg_notify(%s, 't|' || conversation) FROM gone",
                    [question, self._channel],
                )
        except Exception as exc:
            # The row stays until this process dies; the others then reap it.
            log.warning("could not end a turn in %s (%s)", conversation, exc)
        self._wake(conversation)

    async def _wait(self, conversation: str, question: int) -> None:
        event = asyncio.Event()
        self._waiters.setdefault(conversation, set()).add(event)
        try:
            while True:
                event.clear()
                if not await self._earlier(conversation, question):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), POLL_S)
        finally:
            waiters = self._waiters.get(conversation)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[conversation]

    async def _earlier(self, conversation: str, question: int) -> bool:
        """Whether a live process still holds an earlier turn; dead ones' are deleted."""
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute(
                    f"SELECT t.owner, t.owner IN ({LIVE_OWNERS}) AS alive "
                    "FROM turns t JOIN turns mine ON mine.conversation = t.conversation "
                    "WHERE mine.message_id = %s AND t.id < mine.id",
                    [question],
                )
            ).fetchall()
        if any(row["alive"] for row in rows):
            return True
        if rows:
            await self._reap()
        return False

    async def _reap(self) -> None:
        """Delete the turns of processes that are gone."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"WITH gone AS (DELETE FROM turns WHERE owner NOT IN ({LIVE_OWNERS}) "
                "RETURNING conversation) SELECT pg_notify(%s, 't|' || conversation) "
                "FROM (SELECT DISTINCT conversation FROM gone) AS g",
                [self._channel],
            )
            gone = len(await cursor.fetchall())
        if gone:
            log.info("released the turns of stopped processes in %d conversation(s)", gone)

    def _wake(self, conversation: str) -> None:
        for event in self._waiters.get(conversation, ()):
            event.set()


async def open_cluster(
    url: str, pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]], schema: str
) -> PostgresCluster:
    cluster = PostgresCluster(url, pool, schema)
    await cluster.start()
    return cluster
