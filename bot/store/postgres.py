"""The PostgreSQL backend, for running several bot processes on one database.

psycopg 3 is natively async, so no worker thread is needed; a small connection pool
serves every coroutine. The schema mirrors the SQLite one, and the same contract
tests (tests/test_store.py) run against both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bot.store import INSERT_COLUMNS, NewMessage, StoredMessage, UsageRecord, UsageRow, UsageTotals

POSITION = "coalesce(reply_to, id)"
INSERT_MESSAGE = "INSERT INTO messages({}) VALUES ({}) ON CONFLICT DO NOTHING RETURNING id".format(
    ", ".join(INSERT_COLUMNS), ", ".join(["%s"] * len(INSERT_COLUMNS))
)

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        f"""
        CREATE TABLE conversations (
            key TEXT PRIMARY KEY, created_at DOUBLE PRECISION, window_start BIGINT DEFAULT 0);
        CREATE TABLE messages (
            id BIGSERIAL PRIMARY KEY, conversation TEXT NOT NULL, platform_id TEXT,
            role TEXT NOT NULL, author_id TEXT, author_name TEXT, text TEXT NOT NULL,
            thinking TEXT, attachments TEXT, tokens INTEGER NOT NULL, reply_to BIGINT,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION);
        CREATE UNIQUE INDEX idx_messages_platform ON messages(conversation, platform_id);
        CREATE INDEX idx_messages_position ON messages(conversation, ({POSITION}), id);
        CREATE INDEX idx_messages_id ON messages(conversation, id);
        CREATE TABLE conversation_settings (
            conversation TEXT, name TEXT, value TEXT, PRIMARY KEY (conversation, name));
        CREATE TABLE usage (
            id BIGSERIAL PRIMARY KEY, created_at DOUBLE PRECISION, platform TEXT,
            conversation TEXT, user_id TEXT, model TEXT, prompt_tokens BIGINT,
            completion_tokens BIGINT, cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
            outcome TEXT);
        CREATE INDEX idx_usage_time ON usage(created_at);
        CREATE INDEX idx_usage_user ON usage(user_id, created_at);
        CREATE INDEX idx_usage_conversation ON usage(conversation, created_at);
        CREATE TABLE processed_events (key TEXT PRIMARY KEY, seen_at DOUBLE PRECISION);
        CREATE INDEX idx_events_seen ON processed_events(seen_at);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
        """,
    ),
]
EVENT_TTL_SECONDS = 7 * 24 * 3600


class PostgresStore:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]]) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, url: str, *, schema: str = "") -> PostgresStore:
        """Connect, create `schema` if named (tests use one each), apply migrations."""

        async def configure(conn: AsyncConnection[Any]) -> None:
            if schema:
                await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                await conn.commit()

        if schema:
            async with await AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
        pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=10,
            open=False,
            configure=configure,
            kwargs={"row_factory": dict_row, "autocommit": True},
        )
        await pool.open(wait=True, timeout=10)
        store = cls(pool)
        await store._migrate()
        return store

    async def _migrate(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            # One migrator at a time when several bot processes start together.
            await conn.execute("SELECT pg_advisory_xact_lock(7415550001)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS teambot_migrations "
                "(name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            done = {
                r["name"]
                for r in await (
                    await conn.execute("SELECT name FROM teambot_migrations")
                ).fetchall()
            }
            for name, statements in MIGRATIONS:
                if name not in done:
                    await conn.execute(statements)
                    await conn.execute(
                        "INSERT INTO teambot_migrations VALUES (%s, %s)", [name, time.time()]
                    )

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _count(self, query: str, params: Sequence[Any] = ()) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    # Messages

    async def add_message(self, message: NewMessage) -> int | None:
        async with self.pool.connection() as conn, conn.transaction():
            return await self._insert(conn, message)

    async def add_question(self, event_key: str, message: NewMessage) -> StoredMessage | None:
        async with self.pool.connection() as conn, conn.transaction():
            if not await self._claim(conn, event_key):
                return None
            row_id = await self._insert(conn, message)
            if row_id is None:  # recorded earlier as context; it now carries the question
                cursor = await conn.execute(
                    "UPDATE messages SET text = %s, tokens = %s, updated_at = %s "
                    "WHERE conversation = %s AND platform_id = %s RETURNING *",
                    [
                        message.text,
                        message.tokens,
                        time.time(),
                        message.conversation,
                        message.platform_id,
                    ],
                )
            else:
                cursor = await conn.execute("SELECT * FROM messages WHERE id = %s", [row_id])
            row = await cursor.fetchone()
            assert row is not None
            return StoredMessage.from_row(row)

    @staticmethod
    async def _insert(conn: AsyncConnection[dict[str, Any]], message: NewMessage) -> int | None:
        now = message.created_at or time.time()
        await conn.execute(
            "INSERT INTO conversations(key, created_at, window_start) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING",
            [message.conversation, now],
        )
        cursor = await conn.execute(INSERT_MESSAGE, message.values(now))
        row = await cursor.fetchone()
        return int(row["id"]) if row else None

    async def update_message(
        self, conversation: str, platform_id: str, text: str, tokens: int
    ) -> bool:
        return (
            await self._count(
                "UPDATE messages SET text = %s, tokens = %s, updated_at = %s "
                "WHERE conversation = %s AND platform_id = %s",
                [text, tokens, time.time(), conversation, platform_id],
            )
            > 0
        )

    async def delete_message(self, conversation: str, platform_id: str) -> bool:
        return (
            await self._count(
                "DELETE FROM messages WHERE conversation = %s AND platform_id = %s",
                [conversation, platform_id],
            )
            > 0
        )

    async def messages(
        self, conversation: str, *, from_id: int = 0, to_id: int | None = None
    ) -> list[StoredMessage]:
        rows = await self._all(
            f"SELECT * FROM messages WHERE conversation = %s AND {POSITION} >= %s "
            f"AND {POSITION} <= %s ORDER BY {POSITION}, id",
            [conversation, from_id, to_id if to_id is not None else 2**62],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def messages_since(self, conversation: str, after_id: int) -> list[StoredMessage]:
        rows = await self._all(
            "SELECT * FROM messages WHERE conversation = %s AND id > %s ORDER BY id",
            [conversation, after_id],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def seed(self, source: str, target: str, limit: int) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            # Two seeds of one new thread at once: the second waits here, then sees rows.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [target])
            taken = await conn.execute(
                "SELECT 1 FROM messages WHERE conversation = %s LIMIT 1", [target]
            )
            if await taken.fetchone():
                return 0
            cursor = await conn.execute(
                f"SELECT * FROM messages WHERE conversation = %s "
                f"ORDER BY {POSITION} DESC, id DESC LIMIT %s",
                [source, limit],
            )
            rows = [StoredMessage.from_row(row) for row in reversed(await cursor.fetchall())]
            for row in rows:
                await self._insert(conn, row.copy_to(target))
            return len(rows)

    async def answered(self, conversation: str) -> bool:
        rows = await self._all(
            "SELECT 1 FROM messages WHERE conversation = %s AND role = 'assistant' LIMIT 1",
            [conversation],
        )
        return bool(rows)

    async def forget(self, conversation: str) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM messages WHERE conversation = %s", [conversation]
            )
            await conn.execute(
                "UPDATE conversations SET window_start = 0 WHERE key = %s", [conversation]
            )
            return cursor.rowcount

    async def window(self, conversation: str) -> tuple[int, list[StoredMessage]]:
        rows = await self._all(
            "SELECT window_start FROM conversations WHERE key = %s", [conversation]
        )
        start = int(rows[0]["window_start"] or 0) if rows else 0
        return start, await self.messages(conversation, from_id=start)

    async def set_window_start(self, conversation: str, message_id: int) -> None:
        await self._count(
            "INSERT INTO conversations(key, created_at, window_start) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET window_start = EXCLUDED.window_start",
            [conversation, time.time(), message_id],
        )

    # Settings, events, meta

    async def settings(self, conversation: str) -> dict[str, str]:
        rows = await self._all(
            "SELECT name, value FROM conversation_settings WHERE conversation = %s",
            [conversation],
        )
        return {row["name"]: row["value"] for row in rows}

    async def set_setting(self, conversation: str, name: str, value: str | None) -> None:
        if value is None:
            await self._count(
                "DELETE FROM conversation_settings WHERE conversation = %s AND name = %s",
                [conversation, name],
            )
            return
        await self._count(
            "INSERT INTO conversation_settings VALUES (%s, %s, %s) "
            "ON CONFLICT (conversation, name) DO UPDATE SET value = EXCLUDED.value",
            [conversation, name, value],
        )

    async def claim_event(self, event_key: str) -> bool:
        async with self.pool.connection() as conn:
            return await self._claim(conn, event_key)

    @staticmethod
    async def _claim(conn: AsyncConnection[dict[str, Any]], event_key: str) -> bool:
        now = time.time()
        cursor = await conn.execute(
            "INSERT INTO processed_events VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [event_key, now],
        )
        claimed = cursor.rowcount > 0
        if claimed and hash(event_key) % 1000 == 0:
            await conn.execute(
                "DELETE FROM processed_events WHERE seen_at < %s", [now - EVENT_TTL_SECONDS]
            )
        return claimed

    async def get_meta(self, name: str) -> str | None:
        rows = await self._all("SELECT value FROM meta WHERE name = %s", [name])
        return str(rows[0]["value"]) if rows else None

    async def set_meta(self, name: str, value: str) -> None:
        await self._count(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = %s",
            [name, value, value],
        )

    # Usage

    async def record_usage(self, record: UsageRecord) -> None:
        await self._count(
            "INSERT INTO usage(created_at, platform, conversation, user_id, model, "
            "prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                record.created_at or time.time(),
                record.platform,
                record.conversation,
                record.user_id,
                record.model,
                record.prompt_tokens,
                record.completion_tokens,
                record.cost_usd,
                record.latency_ms,
                record.outcome,
            ],
        )

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        conversation: str | None = None,
    ) -> UsageTotals:
        where: list[str] = ["created_at >= %s"]
        params: list[Any] = [since or 0.0]
        if user_id is not None:
            where.append("user_id = %s")
            params.append(user_id)
        if conversation is not None:
            where.append("conversation = %s")
            params.append(conversation)
        row = (
            await self._all(
                "SELECT count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS p, "
                "coalesce(sum(completion_tokens), 0) AS c, coalesce(sum(cost_usd), 0) AS cost "
                f"FROM usage WHERE {' AND '.join(where)}",
                params,
            )
        )[0]
        return UsageTotals(int(row["calls"]), int(row["p"]), int(row["c"]), float(row["cost"]))

    async def usage_rows(self, *, since: float | None = None) -> Sequence[UsageRow]:
        rows = await self._all(
            "SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, "
            "platform, user_id, count(*) AS calls, sum(prompt_tokens) AS p, "
            "sum(completion_tokens) AS c, sum(cost_usd) AS cost FROM usage "
            "WHERE created_at >= %s GROUP BY day, platform, user_id "
            "ORDER BY day, platform, user_id",
            [since or 0.0],
        )
        return [
            UsageRow(
                r["day"],
                r["platform"],
                r["user_id"],
                UsageTotals(int(r["calls"]), int(r["p"]), int(r["c"]), float(r["cost"])),
            )
            for r in rows
        ]

    async def aclose(self) -> None:
        await self.pool.close()
